#!/usr/bin/env bash
# `make bench-detector`: what a hung node costs the foreground, without and with
# the failure detector. A 5-node ring (N=3, W=2, R=2, --fsync batch, on disk) is
# loaded with BENCH_DETECTOR_KEYS keys (default 100,000) of 100 B. YCSB A (64
# clients, through nodes 0 and 1) runs for BENCH_DURATION seconds:
#   1. detector off (--ping-interval-ms 0), healthy ring;
#   2. detector off, node 4 stopped with SIGSTOP (its port open, no answers);
#   then every node is restarted with the detector on (the default):
#   3. healthy ring;
#   4. node 4 stopped with SIGSTOP, once `status` shows it down.
# One run, one table (target/bench/detector.json), ratios against run 3.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release
OUT=target/bench
RESULTS=$OUT/detector.json
KEYS=${BENCH_DETECTOR_KEYS:-100000}
DUR=${BENCH_DURATION:-15}
BASE=17337
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
client() { "$BIN/client" --port "$BASE" "$@"; }
# A stopped node cannot act on SIGTERM: resume it before stopping everything.
resume_all() { for p in "${PIDS[@]:-}"; do [[ -n $p ]] && kill -CONT "$p" 2>/dev/null || true; done; }
trap 'resume_all; cleanup' EXIT

rm -rf "$OUT/detector-data" "$RESULTS"
mkdir -p "$OUT/detector-data" "$OUT/logs"

start() { start_node detector "$@"; }
restart() {
  resume_all
  cleanup
  for ((i = 0; i < 5; i++)); do start "$i" "$@"; done
}
# state_of I: node I's state in node 0's status.
state_of() {
  client --json -c status | grep -o "\"id\":\"127.0.0.1:$((BASE + $1))\",\"state\":\"[a-z]*\"" |
    cut -d'"' -f8
}

for ((i = 0; i < 5; i++)); do start "$i" --ping-interval-ms 0; done
join_ring 5
NODES="--node 127.0.0.1:$BASE --node 127.0.0.1:$((BASE + 1))"
machine="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
note=(--note "5 nodes N=3 W=2 R=2 fsync=batch, $KEYS keys; $machine")
bench() {
  # shellcheck disable=SC2086
  "$BIN/dynamo-bench" run --out "$RESULTS" $NODES --keys "$KEYS" "${note[@]}" "$@"
}

echo "== loading $KEYS keys of 100 B"
bench --label "load" --workload load --clients 64 --duration 1 --warmup 0
echo "== detector off: healthy, then node 4 hung"
bench --label "no detector, healthy" --workload ycsb-a --clients 64 --duration "$DUR" --warmup 2
kill -STOP "${PIDS[4]}"
bench --label "no detector, node 4 hung" --workload ycsb-a --clients 64 --duration "$DUR" --warmup 2
kill -CONT "${PIDS[4]}"

echo "== restarting with the detector on"
restart
for _ in $(seq 1 100); do
  [[ $(state_of 4) == alive ]] && break
  sleep 0.1
done
bench --label "healthy" --workload ycsb-a --clients 64 --duration "$DUR" --warmup 2
kill -STOP "${PIDS[4]}"
stopped=$(date +%s.%N)
for _ in $(seq 1 300); do
  [[ $(state_of 4) == down ]] && break
  sleep 0.1
done
down=$(date +%s.%N)
printf 'node 4 shown down %.1f s after SIGSTOP\n' "$(awk -v a="$stopped" -v b="$down" 'BEGIN { print b - a }')"
bench --label "node 4 hung, held down" --workload ycsb-a --clients 64 --duration "$DUR" --warmup 0
kill -CONT "${PIDS[4]}"
echo
"$BIN/dynamo-bench" report --file "$RESULTS" --against "healthy"
