#!/usr/bin/env bash
# `make profile`: where the ring's time goes. A fresh 3-node ring (N=3, W=2, R=2,
# --fsync batch, on disk), 100,000 keys of 100 B, YCSB A with 64 clients; after
# a few seconds `perf record` samples every process on the machine (the three
# nodes and the load generator) for PROFILE_SECONDS (default 4) with DWARF call
# stacks. PROFILE_WORKLOAD picks another workload (put-only, get-only). Writes target/bench/profile/perf.data, a flat table by binary and
# symbol (top.txt), and, when inferno is installed (`cargo install inferno`),
# one flamegraph of all processes (flamegraph.svg). Needs perf (Debian's
# linux-perf) and root or perf_event_paranoid <= 0.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release
OUT=target/bench
PROF=$OUT/profile
SECS=${PROFILE_SECONDS:-4}
WORKLOAD=${PROFILE_WORKLOAD:-ycsb-a}
BASE=18537
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }

rm -rf "$OUT/prof-data" "$PROF"
mkdir -p "$PROF" "$OUT/logs"
for i in 0 1 2; do start_node prof "$i" --fsync batch; done
join_ring 3
NODES=(--node "127.0.0.1:$BASE" --node "127.0.0.1:$((BASE + 1))" --node "127.0.0.1:$((BASE + 2))")
# The keys are loaded first, on their own: perf samples only the workload.
"$BIN/dynamo-bench" run --out "$PROF/load.json" "${NODES[@]}" --label load --workload "$WORKLOAD" \
  --clients 64 --load --duration 0.5 --warmup 0 >/dev/null
"$BIN/dynamo-bench" run --out "$PROF/run.json" "${NODES[@]}" --label profiled --workload "$WORKLOAD" \
  --clients 64 --duration $((SECS + 4)) --warmup 1 &
LOADGEN=$!
sleep 2
perf record -e cpu-clock -F 499 -a --call-graph dwarf,8192 -o "$PROF/perf.data" -- sleep "$SECS" >/dev/null 2>&1
wait "$LOADGEN"
cleanup
# `head` closes the pipes below early on purpose: their SIGPIPE is no failure.
set +o pipefail
{
  echo "== by binary"
  perf report -i "$PROF/perf.data" --no-children -g none --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
  echo "== by symbol (self)"
  perf report -i "$PROF/perf.data" --no-children -g none --sort dso,sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
  echo "== by function, with what it calls"
  perf report -i "$PROF/perf.data" --children -g none --sort sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' |
    grep -E 'dynamo::|sled::|tarpc::|writev|futex' | head -40
} >"$PROF/top.txt"
if command -v inferno-collapse-perf >/dev/null; then
  perf script -i "$PROF/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$PROF/flamegraph.svg"
  echo "flamegraph: $PROF/flamegraph.svg"
fi
echo "table: $PROF/top.txt"
