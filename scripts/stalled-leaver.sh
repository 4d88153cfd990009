#!/usr/bin/env bash
# The stalled leaving node by hand: usage scripts/stalled-leaver.sh DIR_WITH_dynamo_AND_client
# (e.g. target/release). Five nodes on 26001-26005 (N/W/R 3/2/2), 600 keys.
# remove-node 26005, then SIGSTOP it: the leader settles without it. Every key is
# deleted with its context and the tombstones leave the members' disks. Then
# SIGCONT: prints how many of the 600 deleted keys read back with a value.
# Before fencing, 324 of 600 came back; now none does, and the woken node says
# it was removed.
set -u
BIN=$1; D=$(mktemp -d); P=(26001 26002 26003 26004 26005); N=600
# The grace must exceed twice the longest deadline of a call carrying copies;
# a build without --copy-timeout-ms only checked the request timeout.
if $BIN/dynamo --help | grep -q copy-timeout-ms; then
  FAST=(--tombstone-grace-ms 4500 --copy-timeout-ms 1000)
else
  FAST=(--tombstone-grace-ms 3000)
fi
# A build with security needs --insecure to run without a secret.
SEC=(); $BIN/dynamo --help | grep -q -- --insecure && SEC=(--insecure)
start() { $BIN/dynamo --port $1 "${SEC[@]}" --leader 127.0.0.1:26001 --data-dir $D/d$1 "${FAST[@]}" 2>>$D/log$1 & echo $! > $D/pid$1; sleep 0.5; }
cl() { $BIN/client --port $1 --json "${@:2}"; }
settled() { cl 26001 -c "wait-settled 120" >/dev/null; }
for p in ${P[@]}; do start $p; done
for p in ${P[@]:1}; do cl 26001 -c "add-node 127.0.0.1:$p" >/dev/null; settled; done
for i in $(seq 1 $N); do echo "put s-$i {} v-$i"; done | cl 26001 >/dev/null
echo "600 keys written; removing 26005 and stopping it"
cl 26001 -c "remove-node 127.0.0.1:26005" >/dev/null
kill -STOP $(cat $D/pid26005)
settled
echo "settled without it: $(cl 26001 -c status | python3 -c 'import json,sys; s=json.load(sys.stdin); print("epoch", s["epoch"], "members", [n["id"] for n in s["nodes"]])')"
for i in $(seq 1 $N); do echo "get s-$i"; done | cl 26001 |
  python3 -c 'import json,sys
for i, l in enumerate(sys.stdin, 1):
    print("delete s-%d %s" % (i, json.dumps(json.loads(l)["context"], separators=(",", ":"))))' |
  cl 26001 >/dev/null
echo "deleted; waiting for the tombstones to leave the members' disks"
for _ in $(seq 1 120); do
  left=$(cl 26001 -c status | python3 -c 'import json,sys; print(sum(n.get("tombstones") or 0 for n in json.load(sys.stdin)["nodes"]))')
  [ "$left" = 0 ] && break; sleep 1
done
echo "tombstones on the members: $left"
kill -CONT $(cat $D/pid26005)
echo "26005 woken; waiting 20 s"; sleep 20
back=$(for i in $(seq 1 $N); do echo "get s-$i"; done | cl 26001 |
  python3 -c 'import json,sys; print(sum(1 for l in sys.stdin if json.loads(l).get("values")))')
echo "deleted keys that read back with a value: $back of $N"
echo "26005 says: $(grep -o 'removed from the ring at epoch [0-9]*[^"]*' $D/log26005 | head -1)"
for p in ${P[@]}; do kill $(cat $D/pid$p) 2>/dev/null; done; wait 2>/dev/null
rm -rf "$D"
