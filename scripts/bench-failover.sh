#!/usr/bin/env bash
# `make bench-failover`: how long the ring goes without a leader. A 5-node ring
# (N=3, W=2, R=2, --fsync batch, on disk) of release builds; BENCH_FAILOVER_KILLS
# times (default 20): find the leader, `kill -9` it, and time until every one of
# the four live members' `status` names the same new leader; then start the
# killed node again on its data directory and wait until all five name one
# leader (the old leader follows the new one). Prints each kill and the median
# and max; the per-kill times go to target/bench/failover.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release
OUT=target/bench
KILLS=${BENCH_FAILOVER_KILLS:-20}
BASE=17537
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

rm -rf "$OUT/failover-data" "$OUT/failover.txt"
mkdir -p "$OUT/failover-data" "$OUT/logs"
for ((i = 0; i < 5; i++)); do start_node failover "$i" --http-port $((BASE + 100 + i)); done
join_ring 5

# leader_of I: the leader node I names (empty if it does not answer).
leader_of() {
  "$BIN/client" --port $((BASE + $1)) --json -c status 2>/dev/null |
    python3 -c 'import json, sys
try: print(json.loads(sys.stdin.readline())["leader"])
except Exception: print("")'
}
# agreed I...: the leader all of nodes I... name, if they name one.
agreed() {
  local first="" l i
  for i in "$@"; do
    l=$(leader_of "$i")
    [[ -z $l ]] && return 1
    [[ -z $first ]] && first=$l
    [[ $l == "$first" ]] || return 1
  done
  echo "$first"
}

all=(0 1 2 3 4)
leader=$(agreed "${all[@]}")
for ((k = 1; k <= KILLS; k++)); do
  dead=$((${leader##*:} - BASE))
  live=()
  for i in "${all[@]}"; do [[ $i != "$dead" ]] && live+=("$i"); done
  start=$(date +%s%N)
  kill -9 "${PIDS[dead]}"
  wait "${PIDS[dead]}" 2>/dev/null || true
  while true; do
    now=$(agreed "${live[@]}" || true)
    [[ -n $now && $now != "$leader" ]] && break
    sleep 0.05
  done
  took=$((($(date +%s%N) - start) / 1000000))
  echo "kill $k: $leader killed, $now named by the other four after $took ms" |
    tee -a "$OUT/failover.txt"
  start_node failover "$dead" --http-port $((BASE + 100 + dead))
  until [[ $(agreed "${all[@]}" || true) == "$now" ]]; do sleep 0.1; done
  leader=$now
  sleep 2
done
python3 - "$OUT/failover.txt" <<'PY'
import re, statistics, sys
ms = [int(m) for m in re.findall(r"after (\d+) ms", open(sys.argv[1]).read())]
print(f"{len(ms)} kills: median {statistics.median(ms) / 1000:.2f} s, "
      f"min {min(ms) / 1000:.2f} s, max {max(ms) / 1000:.2f} s")
PY
