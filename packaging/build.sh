#!/usr/bin/env bash
# Build every release artifact into dist/: tether-agent for x86_64, aarch64, mips and mipsel
# (static musl, stripped, profile min-size), tether-relay for x86_64 and aarch64 (static musl,
# stripped), a size check, the .deb/.rpm of both, the OpenWrt .ipk/.apk of the agent for
# x86_64, aarch64_cortex-a53, mips_24kc and mipsel_24kc, and SHA256SUMS.
#
#   packaging/build.sh                 build and package everything (installs missing tools)
#   packaging/build.sh --ci            the same without the aarch64 relay (and its packages):
#                                      all four agents, the x86_64 relay; what CI runs
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
# .deb/.rpm of the agent (and of the relay, when built for it)
DEB_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
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

step() { printf '\n==> %s (at %d s)\n' "$*" "$SECONDS"; }

package_only=0
case "${1:-}" in
"") ;;
--package-only) package_only=1 ;;
--ci)
	# The aarch64 relay is the slowest cold build (about a third of the whole) and the same
	# code as the x86_64 one, which CI builds, packages and runs the agents against.
	RELAY_TARGETS=(x86_64-unknown-linux-musl)
	;;
*)
	echo "usage: $0 [--ci | --package-only]" >&2
	exit 2
	;;
esac

if ((package_only)); then
	# the relays a previous run built (all of them, or the x86_64 one with --ci)
	found=()
	for t in "${RELAY_TARGETS[@]}"; do [[ -f $DIST/tether-relay-$t ]] && found+=("$t"); done
	RELAY_TARGETS=("${found[@]}")
fi

version=$(cargo metadata --no-deps --format-version 1 |
	python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "tether-agent"))')

step "tools"
ensure_build_tools

if ((package_only == 0)); then
	start=$SECONDS
	step "tether-agent for x86_64 and aarch64 (profile min-size)"
	# RUSTC_BOOTSTRAP as for MIPS below (no unstable flag is used here): cargo fingerprints it,
	# so without it the two steps would rebuild each other's shared host crates (proc macros,
	# build scripts) and with them everything, on every run.
	RUSTC_BOOTSTRAP=1 cargo zigbuild --locked -p tether-agent --profile min-size \
		--target x86_64-unknown-linux-musl --target aarch64-unknown-linux-musl

	step "tether-agent for mips and mipsel (profile min-size, std built from source, no ns8)"
	# Tier 3: no prebuilt std. Building it from source needs the nightly flags -Zbuild-std and
	# -Zbuild-std-features, which RUSTC_BOOTSTRAP allows on the pinned stable toolchain.
	# optimize_for_size (instead of std's default features) picks std's smaller algorithms and
	# leaves out the backtrace symbolizer: a panic still prints its message, without a
	# symbolized backtrace (a stripped binary has no symbols for one anyway). These are
	# routers: the NethServer 8 adapter (and its Redis client) is left out.
	RUSTC_BOOTSTRAP=1 cargo zigbuild --locked -p tether-agent --profile min-size \
		--no-default-features --features pty \
		--target mips-unknown-linux-musl --target mipsel-unknown-linux-musl \
		-Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size

	step "tether-relay for ${RELAY_TARGETS[*]%%-*} (profile release, stripped)"
	relay_targets=()
	for t in "${RELAY_TARGETS[@]}"; do relay_targets+=(--target "$t"); done
	CARGO_PROFILE_RELEASE_STRIP=true cargo zigbuild --locked -p tether-relay --release "${relay_targets[@]}"

	step "collect binaries in $DIST/"
	rm -rf "$DIST"
	mkdir -p "$DIST"
	for t in "${AGENT_TARGETS[@]}"; do
		install -m 0755 "$TARGET_DIR/$t/min-size/tether-agent" "$DIST/tether-agent-$t"
	done
	# MIPS objects carry .pdr (procedure descriptors for old debuggers, 8 % of the file):
	# never loaded, and the linker's strip keeps it. The toolchain's own llvm-objcopy
	# (rust-objcopy) removes it; it needs the toolchain's libLLVM.
	sysroot=$(rustc --print sysroot)
	objcopy="$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-objcopy"
	for t in mips-unknown-linux-musl mipsel-unknown-linux-musl; do
		LD_LIBRARY_PATH="$sysroot/lib" "$objcopy" --remove-section=.pdr "$DIST/tether-agent-$t"
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
for t in "${DEB_TARGETS[@]}"; do
	mkdir -p "$stage/$t/release"
	cp "$DIST/tether-agent-$t" "$stage/$t/release/tether-agent"
	CARGO_TARGET_DIR=$stage cargo deb --quiet -p tether-agent --no-build --no-strip --target "$t" -o "$DIST/"
	cargo generate-rpm -p agent-cli --target "$t" --target-dir "$stage" -o "$DIST/"
done
for t in "${RELAY_TARGETS[@]}"; do
	cp "$DIST/tether-relay-$t" "$stage/$t/release/tether-relay"
	CARGO_TARGET_DIR=$stage cargo deb --quiet -p tether-relay --no-build --no-strip --target "$t" -o "$DIST/"
	cargo generate-rpm -p relay --target "$t" --target-dir "$stage" -o "$DIST/"
done
for t in "${AGENT_TARGETS[@]}"; do
	python3 packaging/openwrt/mkpkg.py --binary "$DIST/tether-agent-$t" \
		--arch "${OPENWRT_ARCH[$t]}" --version "$version" --out "$DIST"
done

step "checksums"
sums=$(cd "$DIST" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%f\n' | LC_ALL=C sort | xargs sha256sum)
printf '%s\n' "$sums" | tee "$DIST/SHA256SUMS"
printf '\nbuilt and packaged in %d s\n' "$SECONDS"
