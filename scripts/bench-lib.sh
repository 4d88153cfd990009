# Shared by scripts/bench.sh and scripts/bench-move.sh (sourced, not run): the
# processes a benchmark starts, stopped on exit, and a port probe.

PIDS=()

# Stops every process in PIDS (SIGTERM: the nodes flush and exit) and waits.
cleanup() {
  for p in "${PIDS[@]:-}"; do [[ -n $p ]] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [[ -n $p ]] && wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap cleanup EXIT

# listening PORT: true once something accepts connections on 127.0.0.1:PORT.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
