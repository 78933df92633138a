# tether-relay %post: enable on first install without starting it (review relay.env first);
# on upgrade restart it only if it was running.
install -d -m 0750 -o tether -g tether /var/lib/tether
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
	systemctl enable tether-relay.service >/dev/null 2>&1 || :
	echo "tether-relay: review /etc/tether/relay.env, then: systemctl start tether-relay"
else
	systemctl try-restart tether-relay.service >/dev/null 2>&1 || :
fi
