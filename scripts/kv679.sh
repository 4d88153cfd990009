#!/usr/bin/env bash
# The kv679 scenario by hand: usage scripts/kv679.sh DIR_WITH_dynamo_AND_client
# (e.g. target/release). Three nodes on 25001-25003; node 25002 writes k three
# times, loses its data directory, restarts and writes again; every node reads k.
# Before incarnations, the last write was acknowledged and then lost everywhere.
BIN=$1; D=$(mktemp -d); P=(25001 25002 25003)
# A build with security needs --insecure to run without a secret.
SEC=(); $BIN/dynamo --help | grep -q -- --insecure && SEC=(--insecure)
start() { $BIN/dynamo --port $1 "${SEC[@]}" --leader 127.0.0.1:25001 --data-dir $D/d$1 2>>$D/log$1 & echo $! > $D/pid$1; sleep 0.5; }
cl() { $BIN/client --port $1 --json -c "$2"; }
for p in ${P[@]}; do start $p; done
cl 25001 "add-node 127.0.0.1:25002" >/dev/null; cl 25001 "wait-settled" >/dev/null
cl 25001 "add-node 127.0.0.1:25003" >/dev/null; cl 25001 "wait-settled" >/dev/null
ctx='{}'
for v in old0 old1 old2; do
  out=$(cl 25002 "put k $ctx $v"); ctx=$(echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["context"],separators=(",",":")))')
done
echo "after three puts through 25002: context $ctx"
kill -9 $(cat $D/pid25002); sleep 0.3; rm -rf $D/d25002; start 25002; sleep 4
echo "put k {} newest through 25002 after wiping it:"; cl 25002 "put k {} newest"
sleep 3
for p in ${P[@]}; do echo "get k via $p: $(cl $p 'get k')"; done
for p in ${P[@]}; do kill $(cat $D/pid$p) 2>/dev/null; done; wait 2>/dev/null
