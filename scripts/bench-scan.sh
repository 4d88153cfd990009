#!/usr/bin/env bash
# `scripts/bench-scan.sh [KEYS]`: what listing, backup and restore cost, on the
# release build. A 3-node ring (N=3, W=2, R=2, --fsync batch, on disk, secured)
# loaded with KEYS keys of 100 B (default 1,000,000), then:
#   - scan rate: every page of `scan --limit 10000` (one replica per range),
#     then with --consistent (R per range), in keys/s;
#   - backup rate: `client backup` of the whole ring, keys/s and MB/s;
#   - restore rate: `client restore` of that file into a fresh 3-node ring;
#   - YCSB A (64 clients, BENCH_DURATION s, default 8) alone, then with a
#     consistent scan of the whole ring looping beside it (same run, same keys).
# Results in target/bench/scan.txt and target/bench/scan.json; the YCSB
# table and its ratios (with-scan / alone) are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${1:-1000000}
OUT=target/bench
RESULTS=$OUT/scan.json
TXT=$OUT/scan.txt
DUR=${BENCH_DURATION:-8}
BASE=18637
BIN=target/release
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

[[ -x $BIN/dynamo-bench ]] || { echo "run 'make build' first" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq is needed" >&2; exit 1; }
rm -rf "$RESULTS" "$TXT" "$OUT/scan-data" "$OUT/scan2-data" "$OUT/scan.backup"
mkdir -p "$OUT/logs"
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }
say() { echo "$*" | tee -a "$TXT"; }

for i in 0 1 2; do start_node scan "$i" --fsync batch; done
join_ring 3
nodes=(--node "127.0.0.1:$BASE" --node "127.0.0.1:$((BASE + 1))" --node "127.0.0.1:$((BASE + 2))")
say "loading $KEYS keys of 100 B into a 3-node ring (N=3, W=2, R=2)"
"$BIN/dynamo-bench" run --out "$OUT/scan-load.json" "${nodes[@]}" --keys "$KEYS" \
  --duration 0.5 --warmup 0 --workload ycsb-a --clients 64 --load >/dev/null

# scan_all ARGS...: every page through the leader; prints the keys listed.
scan_all() {
  local after="" n=0 page count
  while :; do
    if [[ -n $after ]]; then
      page=$("$BIN/client" --port "$BASE" --json -c "scan --limit 10000 --after $after $*")
    else
      page=$("$BIN/client" --port "$BASE" --json -c "scan --limit 10000 $*")
    fi
    count=$(jq '.keys | length' <<<"$page")
    n=$((n + count))
    after=$(jq -r '.next // empty' <<<"$page")
    [[ -z $after ]] && break
  done
  echo "$n"
}
for mode in "" "--consistent"; do
  t0=$(now)
  n=$(scan_all $mode)
  t1=$(now)
  say "$(awk -v n="$n" -v t="$(elapsed "$t0" "$t1")" -v m="${mode:-one replica per range}" \
    'BEGIN { printf "scan (%s): %d keys in %.1f s = %.0f keys/s\n", m, n, t, n / t }')"
done

t0=$(now)
"$BIN/client" --port "$BASE" --json backup "$OUT/scan.backup" >"$OUT/scan-backup.json"
t1=$(now)
size=$(stat -c %s "$OUT/scan.backup")
n=$(jq .keys "$OUT/scan-backup.json")
say "$(awk -v n="$n" -v s="$size" -v t="$(elapsed "$t0" "$t1")" \
  'BEGIN { printf "backup: %d keys (%.1f MB) in %.1f s = %.0f keys/s, %.1f MB/s\n", n, s / 1e6, t, n / t, s / 1e6 / t }')"

# YCSB A alone, then beside a looping consistent scan.
run=("$BIN/dynamo-bench" run --out "$RESULTS" "${nodes[@]}" --keys "$KEYS")
"${run[@]}" --duration "$DUR" --warmup 1 --workload ycsb-a --clients 64 --label alone >/dev/null
(while :; do scan_all --consistent >/dev/null; done) &
SCANNER=$!
"${run[@]}" --duration "$DUR" --warmup 1 --workload ycsb-a --clients 64 --label with-scan >/dev/null
kill "$SCANNER" 2>/dev/null || true
wait "$SCANNER" 2>/dev/null || true
cleanup

# Restore into a fresh ring of three.
BASE=$((BASE + 10))
for i in 0 1 2; do start_node scan2 "$i" --fsync batch; done
join_ring 3
t0=$(now)
"$BIN/client" --port "$BASE" --json restore "$OUT/scan.backup" >"$OUT/scan-restore.json"
t1=$(now)
n=$(jq .keys "$OUT/scan-restore.json")
say "$(awk -v n="$n" -v s="$size" -v t="$(elapsed "$t0" "$t1")" \
  'BEGIN { printf "restore: %d keys in %.1f s = %.0f keys/s, %.1f MB/s\n", n, t, n / t, s / 1e6 / t }')"
cleanup

"$BIN/dynamo-bench" report --file "$RESULTS" --against alone | tee -a "$TXT"
