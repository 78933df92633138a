#!/usr/bin/env bash
# Run the OpenWrt init script's start_service against stub UCI and procd functions (the real
# ones need ubus and procd), and the run wrapper against fake agents:
#   * the shipped /etc/config/tether (not configured) starts nothing and says why;
#   * a configured agent gets each UCI option as its environment variable, lists joined by
#     commas, booleans as "true", empty options left out;
#   * enabled=0 starts nothing;
#   * the wrapper stops the service on exit 3 only, and passes SIGTERM on to the agent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
init="$here/files/tether-agent.init"
run="$here/files/tether-agent-run"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
fail() {
	echo "FAIL $*" >&2
	fails=$((fails + 1))
}
has() { grep -qxF -- "$2" <<<"$1" || fail "$3: no line '$2' in:"$'\n'"$1"; }
lacks() { ! grep -qF -- "$2" <<<"$1" || fail "$3: unexpected '$2' in:"$'\n'"$1"; }

# uci_vars CONFIG_FILE: the config as shell variables (CONFIG_agent_<option>, lists in
# CONFIG_agent_<option>_LIST, newline-separated), the way config_load would see it
uci_vars() {
	python3 - "$1" <<'EOF'
import shlex, sys
lists = {}
for line in open(sys.argv[1]):
    words = shlex.split(line, comments=True)
    if len(words) == 3 and words[0] == "option":
        print(f"CONFIG_agent_{words[1]}={shlex.quote(words[2])}")
    elif len(words) == 3 and words[0] == "list":
        lists.setdefault(words[1], []).append(words[2])
for name, items in lists.items():
    print(f"CONFIG_agent_{name}_LIST={shlex.quote(chr(10).join(items))}")
EOF
}

# start CONFIG_FILE: what start_service asks of procd, one call per line
start() {
	uci_vars "$1" >"$work/vars.sh"
	sh -c '
		. "$1"
		config_load() { :; }
		config_get() { eval "$1=\${CONFIG_${2}_${3}:-\$4}"; }
		config_get_bool() {
			config_get "$@"
			eval "case \$$1 in 1|on|true|yes|enabled) $1=1 ;; *) $1=0 ;; esac"
		}
		config_list_foreach() {
			eval "items=\${CONFIG_${1}_${2}_LIST:-}"
			[ -n "$items" ] || return 0
			old_ifs=$IFS; IFS="
"
			for item in $items; do IFS=$old_ifs; "$3" "$item"; done
			IFS=$old_ifs
		}
		procd_open_instance() { echo open; }
		procd_close_instance() { echo close; }
		procd_set_param() { echo "set $*"; }
		procd_append_param() { echo "append $*"; }
		logger() { echo "log $*"; }
		. "$2"
		start_service
	' sh "$work/vars.sh" "$init"
}

# the shipped config: not configured
out=$(start "$here/files/tether.config")
has "$out" "log -t tether-agent not configured: set tether.agent.url, key and secret in /etc/config/tether, then /etc/init.d/tether-agent restart" "unconfigured"
lacks "$out" "open" "unconfigured"

# configured
sed -e "s|option url ''|option url 'wss://relay.example.com/support/api/tunnel'|" \
	-e "s|option key ''|option key 'TTH-KEY'|" -e "s|option secret ''|option secret 'tth_s3cret'|" \
	-e "s|#list static_service 'luci=127.0.0.1:443:tls'|list static_service 'luci=127.0.0.1:443:tls'\n\tlist static_service 'ssh=127.0.0.1:22'|" \
	-e "s|option tls_insecure '0'|option tls_insecure '1'|" -e "s|option platform 'auto'|option platform 'openwrt'|" \
	-e "s|option no_terminal '0'|option no_terminal '1'|" -e "s|option relay_pin ''|option relay_pin 'abcd'|" \
	"$here/files/tether.config" >"$work/configured"
out=$(start "$work/configured")
has "$out" "open" "configured"
has "$out" "set command /usr/libexec/tether-agent-run /usr/bin/tether-agent" "configured"
has "$out" "set env SUPPORT_URL=wss://relay.example.com/support/api/tunnel SYSTEM_KEY=TTH-KEY SYSTEM_SECRET=tth_s3cret" "configured"
has "$out" "append env STATIC_SERVICES=luci=127.0.0.1:443:tls,ssh=127.0.0.1:22" "configured"
has "$out" "append env TLS_INSECURE=true" "configured"
has "$out" "append env TETHER_NO_TERMINAL=true" "configured"
has "$out" "append env TETHER_PLATFORM=openwrt" "configured"
has "$out" "append env TETHER_RELAY_PIN=abcd" "configured"
has "$out" "append env RECONNECT_DELAY=5s" "configured"
has "$out" "append env MAX_RECONNECT_DELAY=5m" "configured"
has "$out" "append env RUST_LOG=info" "configured"
has "$out" "set respawn 3600 5 5" "configured"
has "$out" "close" "configured"
for unset in NODE_ID EXCLUDE_PATTERNS TETHER_SERVICES_FILE REDIS_ADDR TETHER_CA_FILE DIAGNOSTICS_DIR TETHER_NO_SUPPORT_USERS; do
	lacks "$out" "$unset=" "configured: empty option $unset"
done

# disabled
sed "s|option enabled '1'|option enabled '0'|" "$work/configured" >"$work/disabled"
out=$(start "$work/disabled")
lacks "$out" "open" "disabled"
has "$out" "log -t tether-agent disabled in /etc/config/tether (tether.agent.enabled=0), not starting" "disabled"

# the run wrapper
mkdir -p "$work/bin"
printf '#!/bin/sh\necho "$*" >>"%s/init.calls"\n' "$work" >"$work/init"
printf '#!/bin/sh\n:\n' >"$work/bin/logger"
chmod +x "$work/init" "$work/bin/logger"
wrap() { PATH="$work/bin:$PATH" TETHER_INIT_SCRIPT="$work/init" sh "$run" "$@"; }
rc=0
wrap sh -c 'exit 3' || rc=$?
[[ $rc == 3 ]] || fail "wrapper: exit code $rc, want 3"
[[ $(cat "$work/init.calls" 2>/dev/null) == stop ]] || fail "wrapper: exit 3 did not stop the service"
rm -f "$work/init.calls"
rc=0
wrap sh -c 'exit 1' || rc=$?
[[ $rc == 1 ]] || fail "wrapper: exit code $rc, want 1"
[[ ! -e $work/init.calls ]] || fail "wrapper: exit 1 stopped the service (procd should respawn it)"
# SIGTERM reaches the agent: a fake agent that exits 0 on TERM
(PATH="$work/bin:$PATH" TETHER_INIT_SCRIPT="$work/init" exec sh "$run" sh -c 'trap "exit 0" TERM; while :; do sleep 0.05; done') &
wpid=$!
# poll until the fake agent runs under the wrapper, then stop the wrapper as procd would
for _ in $(seq 1 200); do pgrep -P "$wpid" >/dev/null && break; sleep 0.05; done
kill -TERM "$wpid"
rc=0
timeout 10 tail --pid="$wpid" -f /dev/null || fail "wrapper: did not exit within 10 s of SIGTERM"
wait "$wpid" || rc=$?
[[ $rc == 0 ]] || fail "wrapper: exit code $rc after SIGTERM, want 0 (the agent's)"

((fails == 0))
