#!/usr/bin/env bash
# `make fuzz`: coverage-guided fuzzing with cargo-fuzz (libFuzzer), one target
# after another, each for FUZZ_SECONDS (default 60) seconds. FUZZ_TARGETS
# picks targets (default: all four). cargo-fuzz needs a nightly toolchain:
# without one this says SKIPPED and exits 0; cargo-fuzz itself is installed
# when missing.
#
# Each run starts from the kept seeds, fuzz/corpus/TARGET/ (read only), and
# from what earlier local runs found, fuzz/generated/TARGET/, where libFuzzer
# writes every new input (the first corpus folder is where it writes; that
# folder is not committed). A crash leaves its input in fuzz/artifacts/TARGET/
# and fails the run; after the fix, the input goes to fuzz/regressions/TARGET/
# for good, where tests/fuzz_corpus.rs replays it in every `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-rpc_frame repl_parse context_parse http_routes}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "SKIPPED make fuzz: no nightly toolchain (cargo fuzz needs one)"
    exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

failed=()
for target in $TARGETS; do
    mkdir -p "fuzz/generated/$target"
    echo "== fuzz $target for ${SECONDS_EACH}s"
    if ! cargo +nightly fuzz run "$target" "fuzz/generated/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1; then
        failed+=("$target")
    fi
done
if ((${#failed[@]})); then
    echo "make fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "make fuzz: no crash in ${TARGETS// /, } (${SECONDS_EACH}s each)"
