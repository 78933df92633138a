#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time (FUZZ_SECONDS each, default 10) and
# fails if any of them finds a crash, a failed assertion or an input slower than 10 s.
# The golden JSON documents seed the corpus. Stable toolchain: RUSTC_BOOTSTRAP enables the
# sanitizer flags cargo-fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

FUZZ_SECONDS="${FUZZ_SECONDS:-10}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

cargo fuzz build
failed=()
for target in $(cargo fuzz list); do
    echo "== fuzzing $target for ${FUZZ_SECONDS}s"
    mkdir -p "corpus/$target"
    if ! cargo fuzz run "$target" "corpus/$target" ../agent-core/tests/golden -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10; then
        failed+=("$target")
    fi
done

if ((${#failed[@]} > 0)); then
    echo "fuzzing found problems in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets ran ${FUZZ_SECONDS}s without a crash"
