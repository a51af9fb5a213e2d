#!/usr/bin/env bash
# One gateway (release build) against Tansu through faults without a restart
# in between: postbacks sent before, during and after the broker is frozen for
# 3 s and for 12 s; then SIGTERM while the broker is frozen and postbacks
# arrive. It prints how long each spool took to drain, the SIGTERM's exit and
# time, and, after a restart on the same spool, whether every postback
# answered OK is in the topic exactly once.
#
# Usage: bash load-tests/live-faults.sh   (after cargo build --release; needs
# tansu, curl and bc; loopback ports 28080, 29090, 29092; about 2 minutes)
set -u
BIN="$(cd "$(dirname "$0")/.." && pwd)/target/release/postback-gateway"
command -v tansu >/dev/null 2>&1 || export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
W=$(mktemp -d); cd "$W"
tansu broker --storage-engine memory://tansu/ --listener-url tcp://127.0.0.1:29092 --advertised-listener-url tcp://127.0.0.1:29092 >tansu.log 2>&1 &
TP=$!; sleep 1
printf 'shutdown_grace_ms = 5000\n' > gw.toml
KAFKA_BROKERS=127.0.0.1:29092 POSTBACK_CONFIG=gw.toml POSTBACK_API_KEY=live-key-0123456789 LISTEN_ADDR=127.0.0.1:28080 ADMIN_ADDR=127.0.0.1:29090 SPOOL_DIR=$W/spool RUST_LOG=info $BIN >gw.log 2>&1 &
GP=$!
for i in $(seq 1 100); do curl -sf http://127.0.0.1:29090/readyz >/dev/null && break; sleep 0.1; done
send() { # $1 = a prefix for the tokens, $2 = how many
  for i in $(seq 1 "$2"); do
    r=$(curl -s -m 10 "http://127.0.0.1:28080/postback?api_key=live-key-0123456789&tracking=$1-$i&amount=1.00")
    echo "$1-$i $r" >> replies.txt
  done
}
gauge() { curl -s http://127.0.0.1:29090/metrics | awk -v m="$1" '$1==m {print $2}'; }
send before 200
for stall in 3 12; do
  kill -STOP $TP; ( send stall$stall 300 ) & S=$!; sleep $stall; kill -CONT $TP; wait $S
  t0=$(date +%s.%N)
  for i in $(seq 1 600); do [ "$(gauge postback_spool_events)" = "0" ] && break; sleep 0.1; done
  echo "after a $stall s stall: spool events $(gauge postback_spool_events) after $(echo "$(date +%s.%N) - $t0" | bc) s; reachable $(gauge postback_kafka_reachable); producer restarts $(gauge postback_kafka_producer_restarts_total)"
  send after$stall 200
done
kill -STOP $TP; ( send term 100 ) & S=$!; sleep 2
t0=$(date +%s.%N); kill -TERM $GP; wait $GP; rc=$?
echo "SIGTERM with the broker frozen: exit $rc after $(echo "$(date +%s.%N) - $t0" | bc) s (grace 5 s)"
wait $S; kill -CONT $TP
ok=$(grep -c " OK " replies.txt); other=$(grep -vc " OK " replies.txt)
echo "sent $(wc -l < replies.txt), answered OK $ok, otherwise $other: $(grep -v ' OK ' replies.txt | awk '{print $2, $3}' | sort | uniq -c | tr '\n' ';')"
# Restart on the same spool with the broker back, let it drain, and read the topic.
KAFKA_BROKERS=127.0.0.1:29092 POSTBACK_CONFIG=gw.toml POSTBACK_API_KEY=live-key-0123456789 LISTEN_ADDR=127.0.0.1:28080 ADMIN_ADDR=127.0.0.1:29090 SPOOL_DIR=$W/spool RUST_LOG=info $BIN >gw2.log 2>&1 &
GP=$!
for i in $(seq 1 300); do [ "$(gauge postback_spool_events)" = "0" ] && break; sleep 0.1; done
echo "after the restart: spool events $(gauge postback_spool_events)"
$BIN events --brokers 127.0.0.1:29092 > events.txt 2>events.err
grep " OK " replies.txt | awk '{print $3}' | sort > ok_ids.txt
grep -o '"event_id":"[^"]*"' events.txt | cut -d'"' -f4 | sort > topic_ids.txt
echo "topic holds $(wc -l < topic_ids.txt) events, $(sort -u topic_ids.txt | wc -l) distinct ids, $(cut -d' ' -f1 events.txt | sort | uniq -d | wc -l) tokens more than once"
echo "answered OK but not in the topic: $(comm -23 ok_ids.txt <(sort -u topic_ids.txt) | wc -l)"
kill -TERM $GP; wait $GP; kill $TP; echo "work dir $W"
