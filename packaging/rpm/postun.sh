# %postun: forget the removed unit. A modified /etc/tether file is kept as .rpmsave (RPM has
# no purge); the relay's /var/lib/tether stays (delete it by hand to drop the database).
systemctl daemon-reload >/dev/null 2>&1 || :
