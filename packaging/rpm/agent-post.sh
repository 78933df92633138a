# tether-agent %post: enable on first install without starting it (not configured yet); on
# upgrade restart it only if it was running.
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
	systemctl enable tether-agent.service >/dev/null 2>&1 || :
	echo "tether-agent: set SUPPORT_URL, SYSTEM_KEY and SYSTEM_SECRET in /etc/tether/agent.env, then: systemctl restart tether-agent"
else
	systemctl try-restart tether-agent.service >/dev/null 2>&1 || :
fi
