# Shared by the bench scripts (sourced, not run): the processes a benchmark
# starts, stopped on exit, a port probe, one node of a ring started by number,
# the rest of a ring joined at its leader, a /metrics scraper, and the CPU
# ticks of processes.

PIDS=()

# Stops every process in PIDS (SIGTERM: the nodes flush and exit) and waits.
cleanup() {
  for p in "${PIDS[@]:-}"; do [[ -n $p ]] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [[ -n $p ]] && wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT

# cpu_ticks PID...: user + system clock ticks those processes have used.
cpu_ticks() {
  local total=0 p f
  for p in "$@"; do
    read -ra f <"/proc/$p/stat"
    total=$((total + f[13] + f[14]))
  done
  echo "$total"
}

# listening PORT: true once something accepts connections on 127.0.0.1:PORT.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_node NAME I [ARGS...]: node I of a ring on BASE+I whose leader is BASE
# (N=3, W=2, R=2), data in $OUT/NAME-data, log in $OUT/logs/NAME-PORT.log, in
# the background (its pid in PIDS[I]); returns once it listens.
start_node() {
  local name=$1 i=$2 port=$((BASE + $2))
  shift 2
  "$BIN/dynamo" --port "$port" --leader "127.0.0.1:$BASE" --qsize 3 --sq-write-n 2 --sq-read-n 2 \
    --data-dir "$OUT/$name-data/$port" "$@" 2>>"$OUT/logs/$name-$port.log" &
  PIDS[i]=$!
  for _ in $(seq 1 100); do listening "$port" && return; sleep 0.1; done
  echo "node $port did not start" >&2
  exit 1
}

# join_ring COUNT: adds nodes BASE+1 .. BASE+COUNT-1 to the ring of the leader on
# BASE, one change at a time (each settles before the next starts).
join_ring() {
  local i
  for ((i = 1; i < $1; i++)); do
    "$BIN/client" --port "$BASE" -c "add-node 127.0.0.1:$((BASE + i))" -c wait-settled >/dev/null
  done
}

# scrape_metrics PORT...: fetches http://127.0.0.1:PORT/metrics of every PORT once
# a second until killed, over kept-alive connections from one process, as
# Prometheus does (a curl per fetch would mostly measure process start-up).
# Run it in the background (`scrape_metrics ... &`): it becomes the python process.
scrape_metrics() {
  exec python3 - "$@" <<'PY'
import http.client, sys, time
conns = [http.client.HTTPConnection("127.0.0.1", int(p), timeout=5) for p in sys.argv[1:]]
while True:
    for c in conns:
        try:
            c.request("GET", "/metrics")
            c.getresponse().read()
        except Exception:
            c.close()
    time.sleep(1)
PY
}
