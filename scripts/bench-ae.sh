#!/usr/bin/env bash
# `make bench-ae`: what anti-entropy repairing at its full rate costs the
# foreground. A 4-node ring (N=3, W=2, R=2, --fsync batch, on disk) is loaded
# with BENCH_AE_KEYS keys (default 600,000, so the refill outlasts the run) of
# 100 B with anti-entropy off. Every node is restarted, still with anti-entropy
# off, node 3 with its data directory deleted: it is readmitted and stays
# empty (refilling, so its reads do not count). YCSB A (64 clients, through
# nodes 0-2) runs for BENCH_DURATION seconds: the baseline. Then every node is
# restarted with anti-entropy on, which refills node 3 at --repair-rate
# (BENCH_REPAIR_RATE, default the node's default) while the same YCSB A runs
# again: the only difference is anti-entropy at work, and both runs start on
# caches a restart emptied. Once node 3 has finished refilling, YCSB A runs a
# third time with anti-entropy on and idle. One run, one table
# (target/bench/ae.json), ratios against the baseline.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release
OUT=target/bench
RESULTS=$OUT/ae.json
KEYS=${BENCH_AE_KEYS:-600000}
DUR=${BENCH_DURATION:-15}
RATE=${BENCH_REPAIR_RATE:-}
BASE=16337
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
client() { "$BIN/client" --port "$BASE" "$@"; }

rm -rf "$OUT/ae-data" "$RESULTS"
mkdir -p "$OUT/ae-data" "$OUT/logs"

start() { start_node ae "$@"; }

for ((i = 0; i < 4; i++)); do start "$i" --anti-entropy-interval-ms 0; done
join_ring 4
NODES="--node 127.0.0.1:$BASE --node 127.0.0.1:$((BASE + 1)) --node 127.0.0.1:$((BASE + 2))"
machine="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
note=(--note "4 nodes N=3 W=2 R=2 fsync=batch, $KEYS keys; $machine")
bench() {
  # shellcheck disable=SC2086
  "$BIN/dynamo-bench" run --out "$RESULTS" $NODES --keys "$KEYS" "${note[@]}" "$@"
}

# field NAME: the first NAME of node 3's entry in a status reply on stdin.
field() { grep -o "\"id\":\"127.0.0.1:$((BASE + 3))\"[^]]*" | grep -o "\"$1\":[a-z0-9]*" | head -n 1 | cut -d: -f2; }
# restart ARGS...: every node stopped (SIGTERM) and started again with ARGS.
restart() {
  cleanup
  for ((i = 0; i < 4; i++)); do start "$i" "$@"; done
}

echo "== loading $KEYS keys of 100 B, anti-entropy off"
bench --label "load" --workload load --clients 64 --duration 1 --warmup 0

echo "== restarting with anti-entropy off; node 3 without its data directory"
rm -rf "$OUT/ae-data/$((BASE + 3))"
restart --anti-entropy-interval-ms 0
# Readmitted under its new identity (a new epoch), refilling: it takes writes
# and refuses reads, and with anti-entropy off it stays so.
for _ in $(seq 1 600); do
  [[ $(client --json -c status | field restoring) == true ]] && break
  sleep 0.1
done
client -c "wait-settled 60" >/dev/null
echo "== YCSB A for ${DUR}s, anti-entropy off (node 3 empty)"
bench --label "anti-entropy off" --workload ycsb-a --clients 64 --duration "$DUR" --warmup 2
echo "node 3 after the run: keys $(client --json -c status | field keys), refilling $(client --json -c status | field restoring)"

echo "== restarting with anti-entropy on: node 3 refills"
extra=()
[[ -n $RATE ]] && extra=(--repair-rate "$RATE")
restart "${extra[@]}"
started=$(date +%s.%N)
echo "== YCSB A for ${DUR}s while node 3 refills"
bench --label "refilling a wiped node" --workload ycsb-a --clients 64 --duration "$DUR" --warmup 2
echo "node 3 after the run: keys $(client --json -c status | field keys), refilling $(client --json -c status | field restoring)"
for _ in $(seq 1 3600); do
  [[ $(client --json -c status | field restoring) == false ]] && break
  sleep 0.5
done
refilled=$(date +%s.%N)
keys3=$(client --json -c status | field keys)
secs=$(awk -v a="$started" -v b="$refilled" 'BEGIN { print b - a }')
printf 'refill: node 3 holds %s keys, refilling ended %.1f s after the restart\n' "$keys3" "$secs"
echo "== YCSB A for ${DUR}s, anti-entropy on and idle"
bench --label "anti-entropy idle" --workload ycsb-a --clients 64 --duration "$DUR" --warmup 2
cat >>"$OUT/ae.txt" <<TXT
$(date -u +%FT%TZ) keys=$KEYS refilled_keys=$keys3 refill_secs=$secs ${RATE:+repair_rate=$RATE}
TXT
echo
"$BIN/dynamo-bench" report --file "$RESULTS" --against "anti-entropy off"
