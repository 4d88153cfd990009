#!/usr/bin/env bash
# scripts/bench-idle.sh: what an idle ring costs, two builds side by side: a 3-node
# ring of /tmp/bench-a then of /tmp/bench-b (dynamo and client in each), 5 s after
# the ring settles, 20 s idle: bytes on loopback (received + sent) and node CPU ticks.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=target/bench; BASE=17637
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
mkdir -p $OUT/logs
for label in A B; do
  BIN=/tmp/bench-${label,,}
  rm -rf $OUT/idle-data
  for i in 0 1 2; do start_node idle $i --http-port $((BASE+100+i)); done
  for j in 1 2; do $BIN/client --port $BASE -c "add-node 127.0.0.1:$((BASE + j))" -c wait-settled | tail -1; done
  sleep 5
  b0=$(python3 -c 'import re;l=[x for x in open("/proc/net/dev") if x.strip().startswith("lo:")][0].split(":")[1].split();print(int(l[0])+int(l[8]))'); c0=$(cpu_ticks "${PIDS[@]}")
  sleep 20
  b1=$(python3 -c 'import re;l=[x for x in open("/proc/net/dev") if x.strip().startswith("lo:")][0].split(":")[1].split();print(int(l[0])+int(l[8]))'); c1=$(cpu_ticks "${PIDS[@]}")
  echo "$label: $(( (b1-b0)/20 )) loopback bytes/s (sent+received, 3 nodes), $(( (c1-c0) ))  CPU ticks in 20 s"
  cleanup
done
