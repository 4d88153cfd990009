#!/usr/bin/env bash
# The local ring of `make run-db` / `make testcase` / `make stop`:
# a leader on 127.0.0.1:13337 and members on 13338-13341 (N=3, W=2, R=2),
# each serving HTTP on its port + 5000 (18337-18341),
# data under ./data, logs and pid files under ./logs.
# The ring runs secured: a cluster secret and an admin token are made on first
# start in ./data/secrets (readable by their owner only) and given to every
# node; the client reads the token through DYNAMO_TOKEN_FILE.
set -euo pipefail

BIN=${BIN:-target/release}
HOST=127.0.0.1
LEADER_PORT=${LEADER_PORT:-13337}
# The members' ports, space-separated (tests run a ring on free ports).
read -r -a MEMBER_PORTS <<<"${MEMBER_PORTS:-13338 13339 13340 13341}"
NWR=(--qsize 3 --sq-write-n 2 --sq-read-n 2)
# Each node serves HTTP on its port + HTTP_OFFSET; 0 serves none.
HTTP_OFFSET=${HTTP_OFFSET:-5000}
DATA=${DATA:-data}
LOGS=${LOGS:-logs}
SECRETS=${SECRETS:-$DATA/secrets}
SECRET_FILE=$SECRETS/cluster.secret
TOKEN_FILE=$SECRETS/admin.token
export DYNAMO_TOKEN_FILE=$TOKEN_FILE

# 32 random bytes as hex.
random_hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# Makes the ring's secret and admin token once, readable by their owner only.
ensure_secrets() {
  [[ -f $SECRET_FILE && -f $TOKEN_FILE ]] && return
  mkdir -p "$SECRETS"
  chmod 700 "$SECRETS"
  (umask 077
    random_hex >"$SECRET_FILE"
    echo "dyn_$(random_hex)" >"$TOKEN_FILE")
  echo "made a cluster secret ($SECRET_FILE) and an admin token ($TOKEN_FILE)"
}

listening() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

running() {
  local pidfile="$LOGS/$1.pid"
  [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start_node() {
  local port=$1
  shift
  if running "$port"; then
    echo "node $HOST:$port already running (pid $(cat "$LOGS/$port.pid"))"
    return
  fi
  if listening "$port"; then
    echo "port $port is taken by another program; stop it first" >&2
    exit 1
  fi
  local http=()
  ((HTTP_OFFSET == 0)) || http=(--http-port "$((port + HTTP_OFFSET))")
  # A session of its own: Ctrl-C or Ctrl-Z at the terminal that started the
  # ring (make testcase's REPL) goes to the terminal's process group, and
  # must reach the REPL, not stop the nodes. (setsid execs in place here: a
  # background job of a script is not a group leader, so $! is the node.)
  setsid nohup "$BIN/dynamo" --host "$HOST" --port "$port" "${http[@]}" "${NWR[@]}" \
    --data-dir "$DATA/${HOST}_$port" --cluster-secret-file "$SECRET_FILE" \
    --admin-token-file "$TOKEN_FILE" "$@" >/dev/null 2>>"$LOGS/$port.log" &
  echo $! >"$LOGS/$port.pid"
}

wait_up() {
  local port=$1
  for _ in $(seq 1 100); do
    listening "$port" && return 0
    if ! running "$port"; then
      echo "node $HOST:$port exited; see $LOGS/$port.log:" >&2
      tail -n 5 "$LOGS/$port.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "node $HOST:$port did not start listening; see $LOGS/$port.log" >&2
  exit 1
}

start() {
  mkdir -p "$DATA" "$LOGS"
  ensure_secrets
  start_node "$LEADER_PORT"
  for p in "${MEMBER_PORTS[@]}"; do
    start_node "$p" --leader "$HOST:$LEADER_PORT"
  done
  for p in "$LEADER_PORT" "${MEMBER_PORTS[@]}"; do wait_up "$p"; done
  echo "ring up: leader $HOST:$LEADER_PORT, members ${MEMBER_PORTS[*]/#/$HOST:} (logs in $LOGS/)"
  echo "web page and HTTP API: http://$HOST:$((LEADER_PORT + HTTP_OFFSET))/ (each node on its port + $HTTP_OFFSET)"
  echo "cluster secret: $SECRET_FILE; admin token: $TOKEN_FILE (the client takes it with --token-file or DYNAMO_TOKEN_FILE; the page with its token box)"
}

# One ring change runs at a time: each add-node starts a change, and the next one
# waits until it has settled (the data it moves is small on a fresh ring).
# A member already in the ring (make testcase run again) is said so, calmly.
add_members() {
  local status
  status=$("$BIN/client" --node "$HOST" --port "$LEADER_PORT" --json -c status 2>/dev/null || true)
  for p in "${MEMBER_PORTS[@]}"; do
    if grep -q "\"id\":\"$HOST:$p\"" <<<"$status"; then
      echo "$HOST:$p is already a member"
      continue
    fi
    echo "> add-node $HOST:$p"
    "$BIN/client" --node "$HOST" --port "$LEADER_PORT" -c "add-node $HOST:$p" || true
    "$BIN/client" --node "$HOST" --port "$LEADER_PORT" -c "wait-settled" >/dev/null || true
  done
}

# Every node is asked to stop at once, then each is waited for (up to 10 s,
# then killed): the nodes flush in parallel, not one after another.
stop() {
  local any=0 pids=() f pid
  for f in "$LOGS"/*.pid; do
    [[ -e $f ]] || continue
    pid=$(cat "$f")
    if kill -TERM "$pid" 2>/dev/null; then
      any=1
      pids+=("$pid")
    fi
    rm -f "$f"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  done
  [[ $any == 1 ]] && echo "ring stopped" || echo "no ring running"
}

case ${1:-} in
  start) start ;;
  add-members) add_members ;;
  stop) stop ;;
  *) echo "usage: $0 start|add-members|stop" >&2; exit 2 ;;
esac
