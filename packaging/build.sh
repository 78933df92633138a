#!/usr/bin/env bash
# Build every release artifact into dist/: tether-agent for x86_64, aarch64, mips and mipsel
# (static musl, stripped, profile min-size), tether-relay for x86_64 and aarch64 (static musl,
# stripped), a size check, the .deb/.rpm of both, the OpenWrt .ipk/.apk of the agent for
# x86_64, aarch64_cortex-a53, mips_24kc and mipsel_24kc, and SHA256SUMS.
#
#   packaging/build.sh                 build and package everything (installs missing tools)
#   packaging/build.sh --package-only  repackage the binaries already in dist/
#
# No Docker: cargo-zigbuild links with zig, which carries musl for every target; MIPS is tier 3,
# so std is built from source (-Zbuild-std, RUSTC_BOOTSTRAP on stable). Cross.toml is there for
# those who prefer `cross`. CARGO_TARGET_DIR and ZIG_GLOBAL_CACHE_DIR are honoured (keep them
# outside the clone to make repeat runs fast). docs/packaging.md has the details.
set -euo pipefail
cd "$(dirname "$0")/.."
source packaging/tools.sh

AGENT_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl mips-unknown-linux-musl mipsel-unknown-linux-musl)
RELAY_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
# OpenWrt package architecture for each agent target (MIPS: MIPS32r2 soft-float, the 24Kc)
declare -A OPENWRT_ARCH=(
	[x86_64-unknown-linux-musl]=x86_64
	[aarch64-unknown-linux-musl]=aarch64_cortex-a53
	[mips-unknown-linux-musl]=mips_24kc
	[mipsel-unknown-linux-musl]=mipsel_24kc
)
# The budget: the stripped MIPS agent must fit small routers' flash next to the firmware.
# TETHER_SIZE_BUDGET (bytes) overrides it for experiments only; CI never sets it.
MIPS_BUDGET=${TETHER_SIZE_BUDGET:-$((3 * 1024 * 1024))}
MIPS_AIM=$((2 * 1024 * 1024))

DIST=dist
TARGET_DIR=${CARGO_TARGET_DIR:-target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

step() { printf '\n==> %s\n' "$*"; }

package_only=0
case "${1:-}" in
"") ;;
--package-only) package_only=1 ;;
*)
	echo "usage: $0 [--package-only]" >&2
	exit 2
	;;
esac

version=$(cargo metadata --no-deps --format-version 1 |
	python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "tether-agent"))')

step "tools"
ensure_build_tools

if ((package_only == 0)); then
	start=$SECONDS
	step "tether-agent for x86_64 and aarch64 (profile min-size)"
	cargo zigbuild --locked -p tether-agent --profile min-size \
		--target x86_64-unknown-linux-musl --target aarch64-unknown-linux-musl

	step "tether-agent for mips and mipsel (profile min-size, std built from source)"
	# Tier 3: no prebuilt std. Building it from source needs the nightly flag -Zbuild-std,
	# which RUSTC_BOOTSTRAP allows on the pinned stable toolchain.
	RUSTC_BOOTSTRAP=1 cargo zigbuild --locked -p tether-agent --profile min-size \
		--target mips-unknown-linux-musl --target mipsel-unknown-linux-musl \
		-Zbuild-std=std,panic_abort

	step "tether-relay for x86_64 and aarch64 (profile release, stripped)"
	CARGO_PROFILE_RELEASE_STRIP=true cargo zigbuild --locked -p tether-relay --release \
		--target x86_64-unknown-linux-musl --target aarch64-unknown-linux-musl

	step "collect binaries in $DIST/"
	rm -rf "$DIST"
	mkdir -p "$DIST"
	for t in "${AGENT_TARGETS[@]}"; do
		install -m 0755 "$TARGET_DIR/$t/min-size/tether-agent" "$DIST/tether-agent-$t"
	done
	for t in "${RELAY_TARGETS[@]}"; do
		install -m 0755 "$TARGET_DIR/$t/release/tether-relay" "$DIST/tether-relay-$t"
	done
	echo "built in $((SECONDS - start)) s"
fi

step "sizes (stripped)"
python3 packaging/sizes.py --budget "$MIPS_BUDGET" --aim "$MIPS_AIM" "$DIST"/tether-agent-* "$DIST"/tether-relay-* |
	tee "$DIST/sizes.txt" # sizes.py fails (and pipefail stops the build) when a MIPS agent is over

step "packages"
# cargo-deb and cargo-generate-rpm take binaries from <target-dir>/<triple>/release/: give them
# a target dir that holds exactly the artifacts in dist/, so a package is built from what was
# measured and checksummed.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
rm -f "$DIST"/*.deb "$DIST"/*.rpm "$DIST"/*.ipk "$DIST"/*.apk
for t in "${RELAY_TARGETS[@]}"; do
	mkdir -p "$stage/$t/release"
	cp "$DIST/tether-agent-$t" "$stage/$t/release/tether-agent"
	cp "$DIST/tether-relay-$t" "$stage/$t/release/tether-relay"
	for pkg in tether-agent tether-relay; do
		CARGO_TARGET_DIR=$stage cargo deb --quiet -p "$pkg" --no-build --no-strip --target "$t" -o "$DIST/"
	done
	for dir in agent-cli relay; do
		cargo generate-rpm -p "$dir" --target "$t" --target-dir "$stage" -o "$DIST/"
	done
done
for t in "${AGENT_TARGETS[@]}"; do
	python3 packaging/openwrt/mkpkg.py --binary "$DIST/tether-agent-$t" \
		--arch "${OPENWRT_ARCH[$t]}" --version "$version" --out "$DIST"
done

step "checksums"
sums=$(cd "$DIST" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%f\n' | LC_ALL=C sort | xargs sha256sum)
printf '%s\n' "$sums" | tee "$DIST/SHA256SUMS"
