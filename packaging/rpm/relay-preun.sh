# tether-relay %preun: on erase (not upgrade) stop and disable the unit.
if [ "$1" -eq 0 ]; then
	systemctl stop tether-relay.service >/dev/null 2>&1 || :
	systemctl disable tether-relay.service >/dev/null 2>&1 || :
fi
