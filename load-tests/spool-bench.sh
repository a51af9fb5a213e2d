#!/usr/bin/env bash
# Measures the durability path on this machine:
#   1. the spooled write rate: postbacks per second answered 200 from the spool
#      while the broker is stopped (SIGSTOP), with wrk and unique tokens;
#   2. the time to drain the spooled events once the broker is back;
#   3. the dedup warm-up time at start for the keys then in the topic.
# Usage: load-tests/spool-bench.sh [SECONDS_OF_SPOOLING] [WARMUP_KEYS]
set -euo pipefail
cd "$(dirname "$0")/.."
spool_secs=${1:-20}
warm_keys=${2:-1000000}

cargo build --release --bin postback-gateway >/dev/null
work=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kport=$(port); pport=$(port); aport=$(port)
pids=()
cleanup() { kill -CONT "${pids[@]}" 2>/dev/null || true; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

tansu broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$kport" \
  --advertised-listener-url "tcp://127.0.0.1:$kport" >"$work/tansu.log" 2>&1 &
tansu=$!; pids+=($tansu)
sleep 1
start_gateway() {
  KAFKA_BROKERS=127.0.0.1:$kport POSTBACK_API_KEY=bench-key-0123456789 LISTEN_ADDR=127.0.0.1:$pport \
    ADMIN_ADDR=127.0.0.1:$aport SPOOL_DIR="$work/spool" RUST_LOG=info \
    ./target/release/postback-gateway >>"$work/gateway.log" 2>&1 &
  gw=$!; pids+=($gw)
  until curl -sf "127.0.0.1:$aport/readyz" >/dev/null; do sleep 0.1; done
}
metric() { curl -s "127.0.0.1:$aport/metrics" | awk -v m="$1" '$1==m {print $2}'; }
start_gateway

echo "== 1. spooled write rate (broker stopped), ${spool_secs}s, 50 connections"
kill -STOP $tansu
until [ "$(metric postback_kafka_reachable)" = "0" ]; do sleep 0.2; done
API_KEY=bench-key-0123456789 wrk -t1 -c50 -d"${spool_secs}s" -s load-tests/wrk/unique-postback.lua \
  "http://127.0.0.1:$pport" | tee "$work/wrk-spool.txt" | grep -E 'Requests/sec|Latency|Non-2xx|requests in'
spooled=$(metric postback_spool_events)
echo "spooled events: $spooled, spool bytes: $(metric postback_spool_bytes), fdatasyncs: $(metric postback_spool_syncs_total)"

echo "== 2. drain once the broker is back"
t0=$(date +%s.%N)
kill -CONT $tansu
while [ "$(metric postback_spool_events)" != "0" ]; do sleep 0.1; done
t1=$(date +%s.%N)
python3 -c "d=$t1-$t0; print(f'drained {int(float(\"$spooled\"))} events in {d:.2f} s ({float(\"$spooled\")/d:.0f}/s), skipped as already in Kafka: $(metric postback_spool_skipped_total)')"

echo "== 3. dedup warm-up for about $warm_keys keys"
have=$(metric postback_accepted_total'{source="default"}' || echo 0)
need=$(( warm_keys - ${have%.*} ))
if [ "$need" -gt 0 ]; then
  echo "adding $need more events through the gateway"
  rate=30000
  secs=$(( need / rate + 1 ))
  API_KEY=bench-key-0123456789 wrk -t1 -c50 -d"${secs}s" -s load-tests/wrk/unique-postback.lua "http://127.0.0.1:$pport" >/dev/null
  while [ "$(metric postback_accepted_total'{source="default"}' | cut -d. -f1)" -lt "$warm_keys" ]; do
    API_KEY=bench-key-0123456789 wrk -t1 -c50 -d5s -s load-tests/wrk/unique-postback.lua "http://127.0.0.1:$pport" >/dev/null
  done
fi
kill -TERM $gw; wait $gw || true
start_gateway
grep 'Rebuilt the dedup window' "$work/gateway.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g'
echo "RSS after warm-up: $(grep VmRSS /proc/$gw/status)"
