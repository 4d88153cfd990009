#!/usr/bin/env bash
# `scripts/bench-ab.sh DIR_A DIR_B [ROUNDS]`: two builds of dynamo, alternating, on
# the same machine in the same minutes (A, B, A, B, ...), so a change is judged
# against the VM's drift and not against a number from another hour.
#
# DIR_A and DIR_B each hold `dynamo`, `client` and `dynamo-bench` (copy
# target/release aside before and after the change). Each round and build: a fresh
# 3-node ring (N=3, W=2, R=2, --fsync batch, on disk), 100,000 keys of 100 B loaded,
# then YCSB A (64 clients) for BENCH_DURATION seconds (default 8), with the CPU
# the nodes spent per operation, and one client's sequential put and get for 4 s
# each. Results in target/bench/ab.json, labelled
# "A" and "B"; the table and the B/A ratios are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

A=${1:?usage: scripts/bench-ab.sh DIR_A DIR_B [ROUNDS]}
B=${2:?usage: scripts/bench-ab.sh DIR_A DIR_B [ROUNDS]}
ROUNDS=${3:-3}
OUT=target/bench
RESULTS=$OUT/ab.json
DUR=${BENCH_DURATION:-8}
BASE=18437
BIN=
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

rm -f "$RESULTS" "$OUT/ab-cpu.txt"
mkdir -p "$OUT/logs"
one() { # one LABEL DIR
  local label=$1
  BIN=$2
  rm -rf "$OUT/ab-data"
  for i in 0 1 2; do start_node ab "$i" --fsync batch; done
  join_ring 3
  local nodes=(--node "127.0.0.1:$BASE" --node "127.0.0.1:$((BASE + 1))" --node "127.0.0.1:$((BASE + 2))")
  local run=("$BIN/dynamo-bench" run --out "$RESULTS" "${nodes[@]}" --label "$label")
  "${run[@]}" --duration 0.5 --warmup 0 --workload ycsb-a --clients 64 --load
  # CPU the three nodes spend per operation (user + system, from /proc): steadier
  # than throughput on a VM whose neighbours come and go.
  local before after
  before=$(cpu_ticks "${PIDS[@]}")
  "${run[@]}" --duration "$DUR" --warmup 0 --workload ycsb-a --clients 64
  after=$(cpu_ticks "${PIDS[@]}")
  python3 -c 'import json, os, sys
run = [r for r in json.load(open(sys.argv[1])) if r["spec"]["label"] == sys.argv[2]][-1]
ops = run["all"]["count"]
secs = (int(sys.argv[4]) - int(sys.argv[3])) / os.sysconf("SC_CLK_TCK")
print(f"{sys.argv[2]} ycsb-a: {1e6 * secs / max(ops, 1):.1f} us of node CPU per operation ({ops} operations)")' \
    "$RESULTS" "$label" "$before" "$after" | tee -a "$OUT/ab-cpu.txt"
  "${run[@]}" --duration 4 --warmup 1 --workload put-only --clients 1 --connections 1
  "${run[@]}" --duration 4 --warmup 1 --workload get-only --clients 1 --connections 1
  cleanup
}
for ((r = 1; r <= ROUNDS; r++)); do
  echo "== round $r of $ROUNDS"
  one A "$A"
  one B "$B"
done
"$B/dynamo-bench" report --file "$RESULTS" --against B
