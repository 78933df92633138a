#!/usr/bin/env bash
# Proves that agent-core's protocol layer is no_std: builds it without default features for a
# bare-metal target that has no std at all.
set -euo pipefail
cd "$(dirname "$0")/.."

target=thumbv7em-none-eabihf
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi
cargo build -p agent-core --no-default-features --target "$target"
echo "agent-core builds for $target without std"
