#!/usr/bin/env bash
# `make bench-move`: how fast a ring change moves data, and what it costs the
# foreground. A 3-node ring (N=3, W=2, R=2, --fsync batch, on disk) is loaded with
# BENCH_MOVE_KEYS keys (default 1,000,000) of 100 B; YCSB A (64 clients) runs for
# BENCH_DURATION seconds before the change; then a fourth node is added and the
# same YCSB A runs while the keys move; the script waits for the change to settle
# and prints the move's duration and rate beside the two YCSB A results (one run,
# one table: target/bench/move.json).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release
OUT=target/bench
RESULTS=$OUT/move.json
KEYS=${BENCH_MOVE_KEYS:-1000000}
DUR=${BENCH_DURATION:-15}
RATE=${BENCH_TRANSFER_RATE:-}
BASE=15337
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
client() { "$BIN/client" --port "$BASE" "$@"; }
json_field() { grep -o "\"$1\":[0-9]*" | head -n 1 | cut -d: -f2; }

rm -rf "$OUT/move-data" "$RESULTS"
mkdir -p "$OUT/move-data" "$OUT/logs"
extra=()
[[ -n $RATE ]] && extra=(--transfer-rate "$RATE")
for ((i = 0; i < 4; i++)); do
  port=$((BASE + i))
  security_setup
  "$BIN/dynamo" --port "$port" --leader "127.0.0.1:$BASE" --qsize 3 --sq-write-n 2 --sq-read-n 2 \
    --data-dir "$OUT/move-data/$port" "${SECURITY_FLAGS[@]}" "${extra[@]}" 2>"$OUT/logs/move-$port.log" &
  PIDS+=($!)
done
for ((i = 0; i < 4; i++)); do
  for _ in $(seq 1 100); do listening $((BASE + i)) && break; sleep 0.1; done
done
join_ring 3
NODES="--node 127.0.0.1:$BASE --node 127.0.0.1:$((BASE + 1)) --node 127.0.0.1:$((BASE + 2))"
machine="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
note=(--note "3 nodes N=3 W=2 R=2 fsync=batch, $KEYS keys; $machine")
bench() {
  # shellcheck disable=SC2086
  "$BIN/dynamo-bench" run --out "$RESULTS" $NODES --keys "$KEYS" "${note[@]}" "$@"
}

echo "== loading $KEYS keys of 100 B into 3 nodes"
bench --label "load" --workload load --clients 64 --duration 1 --warmup 0
echo "== YCSB A for ${DUR}s, no change running"
bench --label "before the move" --workload ycsb-a --clients 64 --duration "$DUR" --warmup 2

echo "== add-node 127.0.0.1:$((BASE + 3)), YCSB A for ${DUR}s while the keys move"
start=$(date +%s.%N)
client -c "add-node 127.0.0.1:$((BASE + 3))"
bench --label "during the move" --workload ycsb-a --clients 64 --duration "$DUR" --warmup 0
during=$(client --json -c status)
client -c "wait-settled 3600" >/dev/null
end=$(date +%s.%N)
moved=$(client --json -c status | grep -o "\"id\":\"127.0.0.1:$((BASE + 3))\"[^}]*" | json_field keys)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
rate=$(awk -v m="$moved" -v s="$secs" 'BEGIN { print m / s }')
echo "status $DUR s into the move: $(grep -o '"keys_to_move":[0-9]*,"keys_moved":[0-9]*' <<<"$during" | head -n 1)"
printf 'move: %d keys now on the new node, settled after %.1f s: %.0f keys/s\n' "$moved" "$secs" "$rate"
# Clean-up: after the settle each old node hands off and drops the keys it no
# longer owns; done when the ring holds exactly N = 3 copies of every key again.
want=$((3 * KEYS))
for _ in $(seq 1 1800); do
  total=$(client --json -c status | grep -o '"keys":[0-9]*' | cut -d: -f2 | awk '{ s += $1 } END { print s }')
  [[ -n $total && $total -le $want ]] && break
  sleep 1
done
clean_end=$(date +%s.%N)
clean=$(awk -v a="$end" -v b="$clean_end" 'BEGIN { print b - a }')
printf 'clean-up: the old owners dropped the moved keys %.1f s after the settle (%s copies held, %s wanted)\n' \
  "$clean" "$total" "$want"
cat >>"$OUT/move.txt" <<TXT
$(date -u +%FT%TZ) keys=$KEYS moved=$moved secs=$secs keys_per_sec=$rate cleanup_secs=$clean ${RATE:+transfer_rate=$RATE}
TXT
echo
"$BIN/dynamo-bench" report --file "$RESULTS" --against "before the move"
