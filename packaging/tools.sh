# shellcheck shell=bash
# Sourced by packaging/build.sh and packaging/test.sh: make sure the pinned packaging tools are
# here, installing what is missing (idempotent; no Docker needed, see docs/packaging.md).
# A tool that cannot be installed stops the script: never a silent skip.

ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.0
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

note() { printf '    %s\n' "$*"; }

# ensure_build_tools: zig + cargo-zigbuild, the musl targets, rust-src (MIPS builds std),
# cargo-deb and cargo-generate-rpm.
ensure_build_tools() {
	if ! cargo-zigbuild --version 2>/dev/null | grep -q "$ZIGBUILD_VERSION" ||
		! python3 -m ziglang version >/dev/null 2>&1; then
		note "installing ziglang $ZIGLANG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION (pip)"
		python3 -m pip install --quiet "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
	fi
	local installed
	installed=$(rustup target list --installed)
	for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
		grep -qx "$t" <<<"$installed" || rustup target add "$t"
	done
	rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
	if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
		note "installing cargo-deb $CARGO_DEB_VERSION"
		cargo install --locked "cargo-deb@$CARGO_DEB_VERSION"
	fi
	if ! cargo generate-rpm --version 2>/dev/null | grep -q "$CARGO_GENERATE_RPM_VERSION"; then
		note "installing cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION"
		cargo install --locked "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION"
	fi
}

# ensure_test_tools: qemu-user (binfmt is not needed: the binaries are run through it), rpm,
# dpkg, systemd's offline tools, shellcheck.
ensure_test_tools() {
	local missing=()
	for pair in qemu-aarch64-static:qemu-user-static qemu-mips-static:qemu-user-static \
		qemu-mipsel-static:qemu-user-static rpm:rpm dpkg-deb:dpkg shellcheck:shellcheck \
		systemd-analyze:systemd; do
		command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
	done
	if ((${#missing[@]})); then
		note "installing ${missing[*]} (apt)"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
}
