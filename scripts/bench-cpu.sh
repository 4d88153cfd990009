#!/usr/bin/env bash
# `scripts/bench-cpu.sh BIN_DIR [NODES]`: the CPU one operation costs, split
# between the nodes and the client (the load generator), for get-only, put-only
# and YCSB A with 64 clients, 6 s each, on a fresh ring of NODES (3: N=3, W=2,
# R=2; 1: one unreplicated node), --fsync $FSYNC (default batch), 100,000 keys of
# 100 B loaded.
# BIN_DIR holds `dynamo`, `client` and `dynamo-bench` (a build copied aside, as
# for bench-ab). WORKLOADS="get-only ycsb-a" picks the workloads. CPU is user +
# system time from /proc, steadier than ops/s on a VM whose neighbours come and
# go; run two builds alternately and compare within a round. "busy" is the share
# of both cores in use over the same interval (/proc/stat: everything but idle
# and iowait), and "other" what the machine spent per operation outside the
# nodes and the client (kernel threads, other processes): near 0 when nothing
# else runs.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:?usage: scripts/bench-cpu.sh BIN_DIR [NODES]}
NODES=${2:-3}
OUT=target/bench/cpu
BASE=18637
DUR=6
FSYNC=${FSYNC:-batch}
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

rm -rf "$OUT"
mkdir -p "$OUT/logs"
if [[ $NODES == 1 ]]; then
  security_setup
  "$BIN/dynamo" --port "$BASE" --leader "127.0.0.1:$BASE" --qsize 1 --sq-write-n 1 --sq-read-n 1 \
    --data-dir "$OUT/single" --fsync "$FSYNC" "${SECURITY_FLAGS[@]}" 2>>"$OUT/logs/single.log" &
  PIDS[0]=$!
  for _ in $(seq 1 100); do listening "$BASE" && break; sleep 0.1; done
  nodes=(--node "127.0.0.1:$BASE")
else
  for i in 0 1 2; do start_node cpu "$i" --fsync "$FSYNC"; done
  join_ring 3
  nodes=(--node "127.0.0.1:$BASE" --node "127.0.0.1:$((BASE + 1))" --node "127.0.0.1:$((BASE + 2))")
fi
run=("$BIN/dynamo-bench" run --out "$OUT/runs.json" "${nodes[@]}" --clients 64 --warmup 0)
"${run[@]}" --label load --duration 0.5 --workload ycsb-a --load >/dev/null
for w in ${WORKLOADS:-get-only put-only ycsb-a}; do
  "${run[@]}" --label "$w" --duration "$DUR" --workload "$w" >/dev/null &
  lg=$!
  sleep 0.3
  nodes_before=$(cpu_ticks "${PIDS[@]}")
  client_before=$(cpu_ticks "$lg")
  machine_before=$(head -1 /proc/stat)
  nodes_after=$nodes_before client_after=$client_before machine_after=$machine_before
  # Read the counters until the load generator exits (after that /proc forgets it).
  while kill -0 "$lg" 2>/dev/null; do
    client_after=$(cpu_ticks "$lg") nodes_after=$(cpu_ticks "${PIDS[@]}") machine_after=$(head -1 /proc/stat) || true
    sleep 0.2
  done
  wait "$lg"
  python3 - "$OUT/runs.json" "$w" "$DUR" "$nodes_before" "$nodes_after" "$client_before" "$client_after" \
    "$machine_before" "$machine_after" <<'PY'
import json, os, sys
path, label, dur, nb, na, cb, ca, mb, ma = sys.argv[1:]
run = [r for r in json.load(open(path)) if r["spec"]["label"] == label][-1]
ops = max(run["all"]["count"], 1)
hz = os.sysconf("SC_CLK_TCK")
node = (int(na) - int(nb)) / hz
client = (int(ca) - int(cb)) / hz
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal ...
ticks = [int(b) - int(a) for a, b in zip(mb.split()[1:9], ma.split()[1:9])]
total = max(sum(ticks), 1)
busy = total - ticks[3] - ticks[4]
other = busy / hz - node - client
print(f"{label:9} {ops / float(dur):8.0f} ops/s   nodes {1e6 * node / ops:6.1f} us/op   client {1e6 * client / ops:6.1f} us/op"
      f"   other {1e6 * other / ops:5.1f} us/op   busy {100 * busy / total:3.0f}%   p99 {run['all']['p99_us'] / 1000:5.2f} ms")
PY
done
cleanup
