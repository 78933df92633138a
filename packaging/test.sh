#!/usr/bin/env bash
# Check what packaging/build.sh wrote into dist/:
#   * every agent binary runs (under qemu-user when foreign) against a host tether-relay on
#     loopback: active session, a proxied request, exit 3 when the session is closed;
#   * the .deb files install into a scratch root (dpkg --root, scripts run chrootless against
#     that root), with their files, units, conffiles, user and enablement; remove and purge
#     leave nothing behind;
#   * the .rpm files: rpm -qpil, scripts, config files, an install into a scratch root;
#   * the .ipk/.apk files: structure, control fields, init script, UCI defaults (check.py),
#     and the init script's UCI-to-environment mapping run against stub procd functions;
#   * SHA256SUMS covers every artifact.
# Nothing here touches the real system's packages, users or services.
set -euo pipefail
cd "$(dirname "$0")/.."
source packaging/tools.sh

DIST=dist
fails=0
step() { printf '\n==> %s (at %d s)\n' "$*" "$SECONDS"; }
ok() { printf 'ok   %s\n' "$*"; }
fail() {
	printf 'FAIL %s\n' "$*"
	fails=$((fails + 1))
}
# check DESCRIPTION COMMAND...: run a predicate, report it
check() {
	local what=$1
	shift
	if "$@" >/dev/null 2>&1; then ok "$what"; else fail "$what"; fi
}

step "tools"
ensure_test_tools
[[ -f $DIST/SHA256SUMS ]] || {
	echo "no $DIST/SHA256SUMS: run packaging/build.sh first" >&2
	exit 1
}

step "checksums"
check "SHA256SUMS verifies" bash -c "cd '$DIST' && sha256sum --quiet -c SHA256SUMS"
for f in "$DIST"/*; do
	name=${f##*/}
	[[ $name == SHA256SUMS ]] && continue
	grep -q " $name\$" "$DIST/SHA256SUMS" || fail "SHA256SUMS lists $name"
done

step "agents under qemu-user against a host relay"
# the host relay: TETHER_RELAY_BIN, or a debug build of this checkout
relay_bin=${TETHER_RELAY_BIN:-}
if [[ -z $relay_bin ]]; then
	cargo build --quiet -p tether-relay
	relay_bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/tether-relay"
fi
python3 packaging/qemu_e2e.py --relay "$relay_bin" "$DIST"/tether-agent-*-unknown-linux-musl || fail "qemu end-to-end"
# the MIPS agents are built without the NethServer 8 adapter: asking for it says so
for arch in mips mipsel; do
	check "tether-agent-$arch: --platform ns8 is refused with exit 1, naming the missing support" bash -c \
		"out=\$(qemu-$arch-static '$DIST/tether-agent-$arch-unknown-linux-musl' discover --platform ns8 2>&1); [[ \$? == 1 ]] && grep -q 'without NethServer 8 support' <<<\"\$out\""
done

step ".deb"
# unit and script content
for deb in "$DIST"/*.deb; do
	name=${deb##*/}
	pkg=$(dpkg-deb -f "$deb" Package)
	ctl=$(mktemp -d)
	dpkg-deb -e "$deb" "$ctl"
	check "$name: Architecture is amd64 or arm64" grep -Eq '^Architecture: (amd64|arm64)$' "$ctl/control"
	check "$name: depends on nothing (static binary)" bash -c "! grep -Eq '^Depends: *[^ ]' '$ctl/control'"
	check "$name: conffiles lists /etc/tether/${pkg#tether-}.env" grep -qx "/etc/tether/${pkg#tether-}.env" "$ctl/conffiles"
	for s in postinst prerm postrm; do
		check "$name: $s is executable and parses" bash -c "[[ -x '$ctl/$s' ]] && sh -n '$ctl/$s' && shellcheck -s sh '$ctl/$s'"
	done
	check "$name: postinst enables on first install and never starts" bash -c \
		"grep -q 'enable \"\$unit\"' '$ctl/postinst' && ! grep -v echo '$ctl/postinst' | grep -Eq 'systemctl (.* )?start'"
	check "$name: postinst restarts only a running unit on upgrade" grep -q 'try-restart' "$ctl/postinst"
	rm -rf "$ctl"
done

# the unit is read whole before grep: `grep -q` quitting at the first match would break the
# pipe under tar and dpkg-deb (pipefail then fails the check at random)
unit_has() {
	local unit
	unit=$(dpkg-deb --fsys-tarfile "$1" | tar -xOf - "./usr/lib/systemd/system/$2") && grep -Eq "$3" <<<"$unit"
}
agent_deb=$(ls "$DIST"/tether-agent_*_amd64.deb)
relay_deb=$(ls "$DIST"/tether-relay_*_amd64.deb)
for want in '^Restart=always$' '^RestartPreventExitStatus=.*\b3\b' '^ExecCondition=.*SUPPORT_URL' \
	'^EnvironmentFile=/etc/tether/agent.env$' '^PrivateTmp=yes$' '^#.*NoNewPrivileges=no' \
	'^#.*ProtectSystem=no' '^#.*CapabilityBoundingSet' '^WantedBy=multi-user.target$'; do
	check "tether-agent.service: $want" unit_has "$agent_deb" tether-agent.service "$want"
done
for want in '^User=tether$' '^StateDirectory=tether$' '^NoNewPrivileges=yes$' '^ProtectSystem=strict$' \
	'^PrivateTmp=yes$' '^CapabilityBoundingSet=$' '^ExecStart=/usr/bin/tether-relay serve$' \
	'^EnvironmentFile=/etc/tether/relay.env$'; do
	check "tether-relay.service: $want" unit_has "$relay_deb" tether-relay.service "$want"
done

# install, remove and purge in a scratch root: dpkg runs the maintainer scripts outside a chroot
# with DPKG_ROOT set, and they only touch that root (systemctl --root, systemd-sysusers --root)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status"
dpkgr() { dpkg --root="$root" --force-script-chrootless --force-unsafe-io --log=/dev/null "$@"; }
if dpkgr -i "$agent_deb" "$relay_deb" >"$root.install.log" 2>&1; then ok "dpkg --root -i agent and relay"; else
	fail "dpkg --root -i agent and relay"
	cat "$root.install.log"
fi
for f in usr/bin/tether-agent usr/bin/tether-relay usr/lib/systemd/system/tether-agent.service \
	usr/lib/systemd/system/tether-relay.service usr/share/tether/systemd/hardened.conf \
	etc/tether/agent.env etc/tether/relay.env usr/lib/sysusers.d/tether-relay.conf; do
	check "installed /$f" test -f "$root/$f"
done
check "/etc/tether/agent.env is 0600 (it holds the secret)" bash -c "[[ \$(stat -c %a '$root/etc/tether/agent.env') == 600 ]]"
check "tether-agent.service enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/tether-agent.service"
check "tether-relay.service enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/tether-relay.service"
check "system user tether created in the root" grep -q '^tether:' "$root/etc/passwd"
check "system user tether not created on this host" bash -c "! grep -q '^tether:.*Tether relay' /etc/passwd"
tether_uid=$(awk -F: '$1 == "tether" { print $3 }' "$root/etc/passwd")
check "/var/lib/tether owned by tether" bash -c "[[ \$(stat -c %u '$root/var/lib/tether') == '$tether_uid' ]]"
check "postinst printed how to configure the agent" grep -q 'SUPPORT_URL, SYSTEM_KEY and SYSTEM_SECRET' "$root.install.log"
if systemd-analyze --help 2>/dev/null | grep -q -- '--root'; then
	for u in tether-agent tether-relay; do
		# the scratch root has no other units and no /bin/sh: only the unit's own syntax counts
		out=$(systemd-analyze verify --root="$root" "$u.service" 2>&1 || true)
		if grep -Ei 'unknown|invalid|failed to parse|ignoring|assignment' <<<"$out"; then
			fail "systemd-analyze verify $u.service"
		else ok "systemd-analyze verify $u.service: no unknown or invalid settings"; fi
	done
	systemd-analyze security --offline=yes --root="$root" tether-relay.service 2>/dev/null | tail -1 | sed 's/^/    relay: /' || true
	systemd-analyze security --offline=yes --root="$root" tether-agent.service 2>/dev/null | tail -1 | sed 's/^/    agent (terminal on): /' || true
fi
echo 'SUPPORT_URL=wss://changed' >>"$root/etc/tether/agent.env"
check "dpkg --root -r" dpkgr -r tether-agent tether-relay
check "remove: binaries gone" bash -c "[[ ! -e '$root/usr/bin/tether-agent' && ! -e '$root/usr/bin/tether-relay' ]]"
check "remove: units disabled" bash -c "[[ ! -e '$root/etc/systemd/system/multi-user.target.wants/tether-agent.service' && ! -e '$root/etc/systemd/system/multi-user.target.wants/tether-relay.service' ]]"
check "remove: changed config kept" grep -q 'wss://changed' "$root/etc/tether/agent.env"
check "remove: relay state kept" test -d "$root/var/lib/tether"
check "dpkg --root -P" dpkgr -P tether-agent tether-relay
check "purge: /etc/tether gone" test ! -e "$root/etc/tether"
check "purge: /var/lib/tether gone" test ! -e "$root/var/lib/tether"
check "purge: no file of ours left" bash -c "! find '$root' -name '*tether*' ! -path '*/etc/passwd*' ! -path '*/etc/group*' ! -path '*/etc/shadow*' ! -path '*/etc/gshadow*' | grep -q ."
rm -f "$root.install.log"

step ".rpm"
for rpm in "$DIST"/*.rpm; do
	name=${rpm##*/}
	pkg=$(rpm -qp --qf '%{NAME}' "$rpm" 2>/dev/null)
	short=${pkg#tether-}
	rpm -qpil "$rpm" 2>/dev/null | sed 's/^/    /'
	check "$name: digests" rpm -K --nosignature "$rpm"
	check "$name: arch x86_64 or aarch64" bash -c "rpm -qp --qf '%{ARCH}' '$rpm' | grep -Eqx 'x86_64|aarch64'"
	check "$name: /etc/tether/$short.env is a noreplace config file" bash -c \
		"rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' '$rpm' | grep -Eq '^/etc/tether/$short.env c.*n'"
	check "$name: /usr/bin/$pkg is 0755" bash -c "rpm -qp --qf '[%{FILENAMES} %{FILEMODES:perms}\n]' '$rpm' | grep -qx '/usr/bin/$pkg -rwxr-xr-x'"
	check "$name: unit in /usr/lib/systemd/system" bash -c "rpm -qpl '$rpm' | grep -qx '/usr/lib/systemd/system/$pkg.service'"
	scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
	check "$name: %post enables on install, try-restarts on upgrade, never starts" bash -c \
		"grep -q 'systemctl enable $pkg.service' <<<\"\$0\" && grep -q 'try-restart' <<<\"\$0\" && ! grep -v echo <<<\"\$0\" | grep -q 'systemctl start'" "$scripts"
	check "$name: %preun stops and disables only on erase" bash -c "grep -q 'if \[ \"\\\$1\" -eq 0 \]' <<<\"\$0\"" "$scripts"
done
relay_rpm=$(ls "$DIST"/tether-relay-*.x86_64.rpm)
check "tether-relay rpm: %pre creates the user tether" bash -c "rpm -qp --scripts '$relay_rpm' | grep -q 'useradd --system'"
rroot=$(mktemp -d)
trap 'rm -rf "$root" "$rroot"' EXIT
if rpm --root="$rroot" --initdb && rpm --root="$rroot" -i --nodeps --noscripts --ignorearch "$DIST"/tether-agent-*.x86_64.rpm "$relay_rpm" 2>&1; then
	ok "rpm --root -i (files only)"
	check "rpm: files in place" bash -c "[[ -x '$rroot/usr/bin/tether-agent' && -x '$rroot/usr/bin/tether-relay' && -f '$rroot/etc/tether/agent.env' ]]"
	check "rpm: agent.env is 0600" bash -c "[[ \$(stat -c %a '$rroot/etc/tether/agent.env') == 600 ]]"
else
	fail "rpm --root -i (files only)"
fi

step "OpenWrt .ipk and .apk"
python3 packaging/openwrt/check.py "$DIST"/*.ipk "$DIST"/*.apk || fail "check.py"
for ext in ipk apk; do
	for arch in x86_64 aarch64_cortex-a53 mips_24kc mipsel_24kc; do
		check "$ext for $arch" compgen -G "$DIST/*_$arch.$ext"
	done
done
if packaging/openwrt/init_test.sh; then ok "init script: UCI to environment, unconfigured, disabled, exit 3"; else
	fail "init script: UCI to environment, unconfigured, disabled, exit 3"
fi

printf '\npackaging checks: %s\n' "$([[ $fails == 0 ]] && echo 'all passed' || echo "$fails failed")"
[[ $fails == 0 ]]
