#!/usr/bin/env bash
# The docker ring end to end (`make test-docker`): docker-compose.yaml's leader and four
# members, driven by the `client` container in script mode with --json.
#
#   1. the ring comes up and `testcase` adds the four members
#   2. puts and gets through the client container
#   3. member4 stopped: puts and gets still succeed
#   4. member3 stopped too: puts and gets still succeed, stand-ins hold hints
#   5. both started again: every hint is delivered, their key counts grow
#   6. leader, member1 and member2 stopped: member3 and member4 alone serve the
#      writes they missed, so those came to them by hinted handoff
#   7. the whole project down (volumes kept) and up again: every value is still there
#
# Runs as its own compose project (dynamotest), so the ring of `make run-db-docker`
# is never touched, and removes its containers and volumes on exit, failed or not.
# Prints PASS/FAIL per check and ends with "N passed, M failed"; exit status 1 if any
# check failed. Expects the image dynamo:local (`make test-docker` builds it).
set -uo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME=dynamotest
DOCKER=scripts/docker.sh
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dynamo-docker-test.XXXXXX")
LOG=$WORK/compose.log
PORT=13337
# Handoff retries every second; a restarted node is reachable within a few.
HANDOFF_TIMEOUT_S=60
MAX_DETAIL=5

passed=0
failed=0
started=$SECONDS

pass() { echo "PASS  $1"; passed=$((passed + 1)); }
fail() {
  echo "FAIL  $1"
  shift
  # The details, at most MAX_DETAIL lines of each.
  local arg lines
  for arg in "$@"; do
    mapfile -t lines < <(grep -v '^$' <<<"$arg")
    ((${#lines[@]} > 0)) && printf '      %s\n' "${lines[@]:0:MAX_DETAIL}"
    ((${#lines[@]} > MAX_DETAIL)) && echo "      ... and $((${#lines[@]} - MAX_DETAIL)) more"
  done
  failed=$((failed + 1))
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if ((failed > 0 || rc != 0)); then
    echo "---- last node logs"
    $DOCKER compose logs --no-color --tail=8 2>/dev/null | sed 's/^/      /'
  fi
  echo "---- teardown: compose down -v (project $COMPOSE_PROJECT_NAME)"
  $DOCKER compose --profile tools down -v --remove-orphans >>"$LOG" 2>&1 ||
    $DOCKER compose down -v --remove-orphans >>"$LOG" 2>&1 ||
    echo "      teardown failed; see $LOG"
  rm -rf "$WORK" "data/docker-secrets/$COMPOSE_PROJECT_NAME"
  if ((rc != 0 && failed == 0)); then
    echo "FAIL  the script stopped early (exit status $rc)"
    failed=$((failed + 1))
  fi
  echo "took $((SECONDS - started))s"
  echo "$passed passed, $failed failed"
  ((failed == 0)) && exit 0 || exit 1
}
trap finish EXIT
trap 'exit 130' INT TERM

for tool in docker jq; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
docker image inspect dynamo:local >/dev/null 2>&1 ||
  { echo "no image dynamo:local; run 'make test-docker' (it builds it)" >&2; exit 1; }

compose() { $DOCKER compose "$@" >>"$LOG" 2>&1; }

# cli NODE: the commands on stdin, run by the client container against NODE:13337 in
# script mode with --json; prints the JSON results, one per line. --no-deps: never
# start a node the test has stopped.
cli() {
  $DOCKER compose run --rm --no-deps -T client --node "$1" --port "$PORT" --json 2>>"$LOG" |
    grep '^{' || true
}

# ok_count FILE: how many results say ok.
ok_count() { jq -s '[.[] | select(.ok == true)] | length' "$1"; }

# status_of NODE: the `status` JSON as NODE sees it.
status_of() { echo status | cli "$1" | head -n 1; }

# puts PREFIX COUNT: `put PREFIX<i> {} value-PREFIX<i>` for i in 1..COUNT.
puts() { for i in $(seq 1 "$2"); do echo "put $1$i {} value-$1$i"; done; }
gets() { for i in $(seq 1 "$2"); do echo "get $1$i"; done; }

# check_gets FILE PREFIX COUNT: every get of PREFIX<i> returned exactly its value.
# Prints the keys that did not, if any.
check_gets() {
  jq -r -s --arg p "$2" --argjson n "$3" '
    [range(0; $n) as $i | {want: ("value-" + $p + (($i + 1) | tostring)), got: .[$i]}
     | select(.got.ok != true or .got.values != [.want])
     | "\(.want): \(.got // "no result" | tostring)"] | .[]' "$1"
}

# node_field STATUS NODE FIELD: keys or hints of NODE in a status result.
node_field() { jq -r --arg id "$2:$PORT" --arg f "$3" '.nodes[] | select(.id == $id) | .[$f]' <<<"$1"; }
total_hints() { jq '[.nodes[].hints // 0] | add' <<<"$1"; }

# --- 1. the ring and its members
compose --profile tools down -v --remove-orphans # a previous run's leftovers
if $DOCKER up >>"$LOG" 2>&1; then
  pass "ring up: leader and member1-4 healthy"
else
  fail "ring up" "$(tail -n 5 "$LOG")"
  exit 1
fi

out=$($DOCKER add-members 2>>"$LOG")
if [[ $(grep -c '^ring change started' <<<"$out") == 4 ]] && [[ $(grep -c '^ring settled' <<<"$out") == 4 ]]; then
  pass "testcase adds the 4 members: $(tail -n 1 <<<"$out")"
else
  fail "testcase adds the 4 members" "$out"
fi

st=$(status_of leader)
alive=$(jq '[.nodes[] | select(.state == "alive")] | length' <<<"$st" 2>/dev/null)
if [[ $alive == 5 ]]; then
  pass "status: 5 members alive, epoch $(jq .epoch <<<"$st"), N/W/R $(jq -r '"\(.qsize)/\(.write_n)/\(.read_n)"' <<<"$st")"
else
  fail "status: 5 members alive" "$st"
fi

# --- 1b. the leader's HTTP API, published on the host
# The ring is secured: scripts/docker.sh made its admin token on the host.
AUTH="Authorization: Bearer $(cat "data/docker-secrets/$COMPOSE_PROJECT_NAME/admin.token")"
http_st=$(curl -s --max-time 10 -H "$AUTH" http://127.0.0.1:18337/status || true)
http_put=$(curl -s --max-time 10 -X PUT -H "$AUTH" -H 'Content-Type: text/plain' --data-binary 'over http' \
  http://127.0.0.1:18337/kv/docker-http || true)
http_get=$(curl -s --max-time 10 -H "$AUTH" http://127.0.0.1:18337/kv/docker-http || true)
http_anon=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 http://127.0.0.1:18337/kv/docker-http || true)
if [[ $http_anon == 401 ]]; then
  pass "HTTP without a token: 401"
else
  fail "HTTP without a token: 401" "got $http_anon"
fi
if [[ $(jq '.nodes | length' <<<"$http_st" 2>/dev/null) == 5 && $(jq .ok <<<"$http_put" 2>/dev/null) == true &&
  $http_get == "over http" ]]; then
  pass "HTTP on the host at 127.0.0.1:18337: status shows 5 members, a put reads back"
else
  fail "HTTP on the host at 127.0.0.1:18337" "status: ${http_st:0:200}" "put: $http_put" "get: $http_get"
fi

# --- 2. put and get through the client container
puts base 20 | cli leader >"$WORK/put-base"
gets base 20 | cli member2 >"$WORK/get-base"
bad=$(check_gets "$WORK/get-base" base 20)
if [[ $(ok_count "$WORK/put-base") == 20 && -z $bad ]]; then
  pass "20 puts at the leader, 20 gets at member2 read them back"
else
  fail "puts and gets" "puts ok: $(ok_count "$WORK/put-base") of 20" "$bad"
fi

before=$(status_of leader)
keys3_before=$(node_field "$before" member3 keys)
keys4_before=$(node_field "$before" member4 keys)

# --- 3. one member down
compose stop member4
puts one 20 | cli leader >"$WORK/put-one"
{ gets base 20; gets one 20; } | cli member1 >"$WORK/get-one"
bad=$( (head -n 20 "$WORK/get-one" >"$WORK/get-one-a"; check_gets "$WORK/get-one-a" base 20)
       (tail -n +21 "$WORK/get-one" >"$WORK/get-one-b"; check_gets "$WORK/get-one-b" one 20))
if [[ $(ok_count "$WORK/put-one") == 20 && -z $bad ]]; then
  pass "member4 stopped: 20 puts succeed, all 40 keys read back"
else
  fail "member4 stopped: puts and gets" "puts ok: $(ok_count "$WORK/put-one") of 20" "$bad"
fi

# --- 4. two members down: the writes they miss go to stand-ins as hints
compose stop member3
puts two 40 | cli leader >"$WORK/put-two"
gets two 40 | cli member2 >"$WORK/get-two"
bad=$(check_gets "$WORK/get-two" two 40)
st=$(status_of leader)
hints=$(total_hints "$st")
if [[ $(ok_count "$WORK/put-two") == 40 && -z $bad && $hints -gt 0 ]]; then
  pass "member3 stopped too: 40 puts succeed and read back; stand-ins hold $hints hints"
else
  fail "member3 and member4 stopped: puts, gets, hints" \
    "puts ok: $(ok_count "$WORK/put-two") of 40, hints $hints" "$bad"
fi

# --- 5. both back: hinted handoff
compose start member3 member4
deadline=$((SECONDS + HANDOFF_TIMEOUT_S))
while :; do
  st=$(status_of leader)
  hints=$(total_hints "$st" 2>/dev/null || echo '?')
  keys3=$(node_field "$st" member3 keys 2>/dev/null)
  keys4=$(node_field "$st" member4 keys 2>/dev/null)
  if [[ $hints == 0 && $keys3 =~ ^[0-9]+$ && $keys4 =~ ^[0-9]+$ ]] &&
    ((keys3 > keys3_before && keys4 > keys4_before)); then
    pass "member3 and member4 started: hints drained to 0, keys member3 $keys3_before -> $keys3, member4 $keys4_before -> $keys4"
    break
  fi
  if ((SECONDS >= deadline)); then
    fail "hinted handoff within ${HANDOFF_TIMEOUT_S}s" \
      "hints $hints, keys member3 $keys3_before -> $keys3, member4 $keys4_before -> $keys4"
    break
  fi
  sleep 1
done

# --- 6. only the restarted pair: what it serves it got by handoff. A key whose
# preference list holds neither member3 nor member4 (about 1 in 10) has no replica
# left and may fail to read; no key may read back a wrong value.
compose stop leader member1 member2
gets two 40 | cli member4 >"$WORK/get-pair"
right=$(jq -s '[range(0; 40) as $i | select(.[$i].ok == true and .[$i].values == ["value-two\($i + 1)"])]
  | length' "$WORK/get-pair")
wrong=$(jq -r -s '[range(0; 40) as $i | "value-two\($i + 1)" as $want | .[$i]
  | select(.ok == true and .values != [] and .values != [$want]) | "\($want): \(.values)"] | .[]' \
  "$WORK/get-pair")
if ((right >= 20)) && [[ -z $wrong ]]; then
  pass "leader, member1, member2 stopped: member3+member4 alone read back $right of the 40 keys written while both were down"
else
  fail "the restarted pair serves its hinted writes" "read back $right of 40 (want >= 20)" "$wrong"
fi

# --- 7. the whole project down (volumes kept) and up again
if compose down && $DOCKER up >>"$LOG" 2>&1; then
  { gets base 20; gets one 20; gets two 40; } | cli leader >"$WORK/get-all"
  bad=$( (head -n 20 "$WORK/get-all" >"$WORK/a"; check_gets "$WORK/a" base 20)
         (sed -n 21,40p "$WORK/get-all" >"$WORK/b"; check_gets "$WORK/b" one 20)
         (tail -n +41 "$WORK/get-all" >"$WORK/c"; check_gets "$WORK/c" two 40))
  st=$(status_of leader)
  members=$(jq '.nodes | length' <<<"$st" 2>/dev/null)
  if [[ -z $bad && $members == 5 ]]; then
    pass "down and up again (volumes kept): ring of $members, epoch $(jq .epoch <<<"$st"), all 80 keys read back"
  else
    fail "data survives down and up" "members: $members" "$bad"
  fi
else
  fail "down and up again" "$(tail -n 5 "$LOG")"
fi
