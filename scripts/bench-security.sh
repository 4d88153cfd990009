#!/usr/bin/env bash
# `scripts/bench-security.sh [ROUNDS]`: what security costs, measured in the
# same minutes on the same machine. The release build, alternating a ring run
# --insecure and one with a cluster secret and tokens (insecure, secure,
# insecure, ...; ROUNDS rounds, default 3). Each: a fresh 3-node ring (N=3, W=2,
# R=2, --fsync batch, on disk), 100,000 keys of 100 B loaded, YCSB A (64
# clients) for BENCH_DURATION seconds (default 8), then one client's sequential
# put and get for 4 s each; and the time to open a connection (TCP connect and
# handshake, 300 in a row: a client's, and with the secret a member's).
# Results in target/bench/security.json, labelled "insecure" and "secure"; the
# table and the secure/insecure ratios are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
OUT=target/bench
RESULTS=$OUT/security.json
DUR=${BENCH_DURATION:-8}
BASE=18537
BIN=target/release
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

[[ -x $BIN/dynamo-bench ]] || { echo "run 'make build' first" >&2; exit 1; }
rm -f "$RESULTS" "$OUT/security-connect.txt"
mkdir -p "$OUT/logs"
one() { # one LABEL SECURE
  local label=$1
  SECURE=$2
  unset DYNAMO_TOKEN_FILE
  rm -rf "$OUT/sec-data" "$OUT/secrets"
  for i in 0 1 2; do start_node sec "$i" --fsync batch; done
  join_ring 3
  local nodes=(--node "127.0.0.1:$BASE" --node "127.0.0.1:$((BASE + 1))" --node "127.0.0.1:$((BASE + 2))")
  local run=("$BIN/dynamo-bench" run --out "$RESULTS" "${nodes[@]}" --label "$label")
  "${run[@]}" --duration 0.5 --warmup 0 --workload ycsb-a --clients 64 --load >/dev/null
  "${run[@]}" --duration "$DUR" --warmup 0 --workload ycsb-a --clients 64 >/dev/null
  "${run[@]}" --duration 4 --warmup 1 --workload put-only --clients 1 --connections 1 >/dev/null
  "${run[@]}" --duration 4 --warmup 1 --workload get-only --clients 1 --connections 1 >/dev/null
  local member=()
  [[ $SECURE == 1 ]] && member=(--cluster-secret-file "$OUT/secrets/cluster.secret")
  "$BIN/dynamo-bench" connect --node "127.0.0.1:$BASE" --count 300 "${member[@]}" |
    sed "s/^/$label /" | tee -a "$OUT/security-connect.txt"
  cleanup
}
for ((r = 1; r <= ROUNDS; r++)); do
  echo "== round $r of $ROUNDS"
  one insecure 0
  one secure 1
done
"$BIN/dynamo-bench" report --file "$RESULTS" --against insecure
