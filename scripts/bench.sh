#!/usr/bin/env bash
# `make bench`: fresh local rings, the benchmark suite, the table, the JSON.
#
# 1. A 3-node ring (N=3, W=2, R=2, --fsync batch, data on disk under target/bench):
#    YCSB A (also with a scraper polling every node's /metrics once a second) and B (64 clients, uniform and Zipfian, 100 B and 1 KiB), put-only
#    (64 clients) over the loaded keys and over 200,000 new keys (insert), one
#    client sequential put and get (also with the nodes coordinating gets,
#    --via-node), an open-loop YCSB A run at half the closed-loop throughput,
#    then 1,000,000 keys of 100 B loaded and each node's resident memory read.
# 2. The seed-style baseline: one unreplicated node (N=W=R=1) with the same
#    YCSB A / put-only runs.
# 3. Redis (redis-server from Debian's packages, if installed) with the same runs.
# Results: target/bench/results.json (an array of runs); the table and the
# ratios are printed at the end. BENCH_QUICK=1 shortens every run (for a smoke test).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release
OUT=target/bench
RESULTS=$OUT/results.json
DUR=${BENCH_DURATION:-10}
WARM=2
MEM_KEYS=${BENCH_MEM_KEYS:-1000000}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then DUR=2; WARM=0.5; MEM_KEYS=20000; fi
BASE=14337
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

start_ring() { # start_ring COUNT N W R
  local count=$1 n=$2 w=$3 r=$4
  rm -rf "$OUT/data"
  mkdir -p "$OUT/data" "$OUT/logs"
  for ((i = 0; i < count; i++)); do
    local port=$((BASE + i))
    security_setup
    "$BIN/dynamo" --port "$port" --leader "127.0.0.1:$BASE" --qsize "$n" --sq-write-n "$w" \
      --sq-read-n "$r" --fsync batch --data-dir "$OUT/data/$port" --http-port $((port + 5000)) \
      "${SECURITY_FLAGS[@]}" 2>"$OUT/logs/$port.log" &
    PIDS+=($!)
  done
  for ((i = 0; i < count; i++)); do
    for _ in $(seq 1 100); do listening $((BASE + i)) && break; sleep 0.1; done
  done
  join_ring "$count"
}

nodes_args() { # every node of the ring as --node flags
  local count=$1
  for ((i = 0; i < count; i++)); do printf -- '--node 127.0.0.1:%d ' $((BASE + i)); done
}

bench() { "$BIN/dynamo-bench" run --out "$RESULTS" --duration "$DUR" --warmup "$WARM" "$@"; }

mkdir -p "$OUT"
rm -f "$RESULTS"
machine="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"

echo "== dynamo: 3 nodes, N=3 W=2 R=2, fsync batch"
start_ring 3 3 2 2
NODES=$(nodes_args 3)
note=(--note "3 nodes N=3 W=2 R=2 fsync=batch; $machine")
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3" --workload ycsb-a --clients 64 --load "${note[@]}"
# Open loop at half the closed-loop YCSB A throughput just measured (a fixed
# rate would overload a slow machine and idle a fast one), right after it: the
# runs below grow the store (1 KiB values, 200,000 more keys), which lowers the
# ring's capacity, so later on half the first run's rate is no longer half load.
RATE=$(python3 -c 'import json, sys
runs = json.load(open(sys.argv[1]))
print(max(100, int(0.5 * next(r["ops_per_s"] for r in runs
    if r["spec"]["label"] == "dynamo N=3" and r["spec"]["workload"] == "ycsb-a"))))' "$RESULTS")
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3 open" --workload ycsb-a --rate "$RATE" "${note[@]}"
# The same YCSB A with a Prometheus-style scraper fetching every node's /metrics
# once a second (the ratio to the first YCSB A run is its cost).
scrape_metrics $((BASE + 5000)) $((BASE + 5001)) $((BASE + 5002)) &
SCRAPER=$!
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3 scraped" --workload ycsb-a --clients 64 "${note[@]}"
kill "$SCRAPER" 2>/dev/null || true
wait "$SCRAPER" 2>/dev/null || true
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3" --workload ycsb-b --clients 64 "${note[@]}"
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3 zipf" --workload ycsb-a --clients 64 --distribution zipfian "${note[@]}"
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3 1KiB" --workload ycsb-a --clients 64 --value-size 1024 "${note[@]}"
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3" --workload put-only --clients 64 "${note[@]}"
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3 insert" --workload load --keys 200000 --key-offset 10000000 \
  --clients 64 "${note[@]}"
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3 seq" --workload put-only --clients 1 --connections 1 "${note[@]}"
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3 seq" --workload get-only --clients 1 --connections 1 "${note[@]}"
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3 seq via node" --workload get-only --clients 1 --connections 1 \
  --via-node "${note[@]}"
echo "== dynamo: memory after loading $MEM_KEYS keys of 100 B"
# shellcheck disable=SC2086
bench $NODES --label "dynamo N=3 mem" --workload load --keys "$MEM_KEYS" --clients 64 \
  $(printf -- '--rss-pid %s ' "${PIDS[@]}") "${note[@]}"
cleanup

echo "== baseline: one unreplicated node (N=W=R=1)"
start_ring 1 1 1 1
note=(--note "1 node N=1 W=1 R=1 fsync=batch; $machine")
bench --node "127.0.0.1:$BASE" --label "single node" --workload ycsb-a --clients 64 --load "${note[@]}"
bench --node "127.0.0.1:$BASE" --label "single node" --workload put-only --clients 64 "${note[@]}"
bench --node "127.0.0.1:$BASE" --label "single node seq" --workload put-only --clients 1 --connections 1 "${note[@]}"
bench --node "127.0.0.1:$BASE" --label "single node seq" --workload get-only --clients 1 --connections 1 "${note[@]}"
cleanup

if ! command -v redis-server >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "== installing redis-server from Debian's packages for the side-by-side runs"
  (apt-get install -y -q redis-server >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null 2>&1; }) || true
fi
if command -v redis-server >/dev/null; then
  echo "== redis (appendonly everysec)"
  redis-server --port 16379 --save '' --appendonly yes --appendfsync everysec \
    --dir "$OUT" --daemonize no >"$OUT/logs/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do listening 16379 && break; sleep 0.1; done
  note=(--note "redis-server appendonly everysec; $machine")
  bench --redis redis://127.0.0.1:16379 --label redis --workload ycsb-a --clients 64 --load "${note[@]}"
  bench --redis redis://127.0.0.1:16379 --label redis --workload put-only --clients 64 "${note[@]}"
  bench --redis redis://127.0.0.1:16379 --label "redis seq" --workload put-only --clients 1 --connections 1 "${note[@]}"
  bench --redis redis://127.0.0.1:16379 --label "redis seq" --workload get-only --clients 1 --connections 1 "${note[@]}"
  cleanup
else
  echo "== redis-server not installed (apt-get install redis-server): side-by-side skipped"
fi

echo
echo "== results ($RESULTS)"
"$BIN/dynamo-bench" report --file "$RESULTS" --against "dynamo N=3"
