#!/usr/bin/env bash
# `make bench-http`: one 3-node ring (N=3, W=2, R=2, --fsync batch), measured
# through its RPC port with dynamo-bench and through its HTTP API with wrk, in
# the same run; then YCSB A with and without a Prometheus scraper polling every
# node's /metrics once a second (alternating off/on, BENCH_ROUNDS times, default 2).
# Every client talks to node 0 (with N=3 on 3 nodes it holds every key), 64
# connections, 100 B values, 100,000 keys. Results: target/bench-http/.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release
OUT=target/bench-http
RESULTS=$OUT/results.json
DUR=${BENCH_DURATION:-10}
WARM=2
if [[ ${BENCH_QUICK:-0} == 1 ]]; then DUR=2; WARM=0.5; fi
BASE=15337
HTTP=$((BASE + 5000))
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT/logs"
for i in 0 1 2; do start_node ring "$i" --fsync batch --http-port $((HTTP + i)); done
join_ring 3
machine="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
note=(--note "3 nodes N=3 W=2 R=2 fsync=batch, all clients on node 0; $machine")
bench() {
  "$BIN/dynamo-bench" run --out "$RESULTS" --duration "$DUR" --warmup "$WARM" \
    --node "127.0.0.1:$BASE" --clients 64 "${note[@]}" "$@"
}

# wrk_run NAME SCRIPT: 64 connections on node 0's HTTP port; prints one line.
wrk_run() {
  local name=$1 script=$2
  wrk -t 2 -c 64 -d "${DUR}s" --latency -s "$script" "http://127.0.0.1:$HTTP" >"$OUT/wrk-$name.txt"
  local rps p50 p99 non2xx
  rps=$(awk '/^Requests\/sec:/{print $2}' "$OUT/wrk-$name.txt")
  p50=$(awk '$1=="50%"{print $2}' "$OUT/wrk-$name.txt")
  p99=$(awk '$1=="99%"{print $2}' "$OUT/wrk-$name.txt")
  non2xx=$(awk '/Non-2xx/{print $NF}' "$OUT/wrk-$name.txt")
  printf '%-28s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "http $name (wrk)" "$rps" "$p50" "$p99" "${non2xx:-0}" |
    tee -a "$OUT/summary.txt"
}

echo "== RPC (dynamo-bench) and HTTP (wrk), same ring"
bench --label "rpc get" --workload get-only --load
bench --label "rpc insert" --workload load --keys 200000 --key-offset 10000000
wrk_run get scripts/wrk/get.lua
wrk_run put scripts/wrk/put.lua

echo "== YCSB A over RPC without and with a scraper on every node's /metrics (1/s)"
ROUNDS=${BENCH_ROUNDS:-2}
for ((round = 1; round <= ROUNDS; round++)); do
  bench --label "ycsb-a no scraper" --workload ycsb-a
  scrape_metrics $((HTTP)) $((HTTP + 1)) $((HTTP + 2)) &
  SCRAPER=$!
  bench --label "ycsb-a scraper 1/s" --workload ycsb-a
  kill "$SCRAPER" 2>/dev/null || true
  wait "$SCRAPER" 2>/dev/null || true
done
cleanup

echo
echo "== results ($RESULTS, wrk output in $OUT/wrk-*.txt)"
"$BIN/dynamo-bench" report --file "$RESULTS" --against "ycsb-a no scraper"
cat "$OUT/summary.txt"
