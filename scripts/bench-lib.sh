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

# Security of the rings a benchmark starts: SECURE=1 (the default, as users
# run a ring) gives every node a cluster secret and an admin token made under
# $OUT/secrets, and the clients that token (DYNAMO_TOKEN_FILE); SECURE=0 runs
# the nodes --insecure.
SECURE=${SECURE:-1}

# security_setup: SECURITY_FLAGS, the node flags SECURE asks for (the secret
# files made once), and DYNAMO_TOKEN_FILE for the clients.
SECURITY_FLAGS=()
security_setup() {
  if [[ $SECURE == 0 ]]; then
    SECURITY_FLAGS=(--insecure)
    return
  fi
  local dir=$OUT/secrets
  if [[ ! -f $dir/cluster.secret ]]; then
    mkdir -p "$dir"
    (umask 077
      od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/cluster.secret"
      echo "dyn_$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$dir/admin.token")
  fi
  export DYNAMO_TOKEN_FILE=$dir/admin.token
  SECURITY_FLAGS=(--cluster-secret-file "$dir/cluster.secret" --admin-token-file "$dir/admin.token")
}

# listening PORT: true once something accepts connections on 127.0.0.1:PORT.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_node NAME I [ARGS...]: node I of a ring on BASE+I whose leader is BASE
# (N=3, W=2, R=2), data in $OUT/NAME-data, log in $OUT/logs/NAME-PORT.log, in
# the background (its pid in PIDS[I]); returns once it listens.
start_node() {
  local name=$1 i=$2 port=$((BASE + $2))
  shift 2
  security_setup
  "$BIN/dynamo" --port "$port" --leader "127.0.0.1:$BASE" --qsize 3 --sq-write-n 2 --sq-read-n 2 \
    --data-dir "$OUT/$name-data/$port" "${SECURITY_FLAGS[@]}" "$@" 2>>"$OUT/logs/$name-$port.log" &
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
import http.client, os, sys, time
conns = [http.client.HTTPConnection("127.0.0.1", int(p), timeout=5) for p in sys.argv[1:]]
headers = {}
if os.environ.get("DYNAMO_TOKEN_FILE"):
    with open(os.environ["DYNAMO_TOKEN_FILE"]) as f:
        headers["Authorization"] = "Bearer " + f.read().strip()
while True:
    for c in conns:
        try:
            c.request("GET", "/metrics", headers=headers)
            c.getresponse().read()
        except Exception:
            c.close()
    time.sleep(1)
PY
}
