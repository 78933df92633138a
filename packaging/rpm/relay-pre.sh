# tether-relay %pre: the system user `tether` owns /var/lib/tether.
if ! getent passwd tether >/dev/null; then
	useradd --system --user-group --home-dir /var/lib/tether --shell /sbin/nologin \
		--comment "Tether relay" tether
fi
