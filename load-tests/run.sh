#!/usr/bin/env bash
# Runs one load scenario end to end on this machine: builds the release
# binaries, starts the gateway and the bare hyper baseline on core 0 and Tansu
# on core 1, runs the generator on core 1 against the baseline and then the
# gateway with the same settings, checks delivery in Kafka, writes JSON reports and SVG
# plots to load-tests/out/, prints a table with ratios to the baseline, and
# stops everything it started, also on failure or Ctrl-C.
#
# Usage: load-tests/run.sh SCENARIO [RUNS]
#   SCENARIO  a file name in load-tests/scenarios/ without .toml
#   RUNS      repetitions of the baseline/gateway pair (default 1); the table
#             shows medians
# Environment: RATE (open-loop requests/s), DURATION (s), CONCURRENCY,
#   SKIP_BUILD=1 (use the binaries already built),
#   GATEWAY_BIN=PATH (run that gateway binary instead of the one built here:
#   alternate two builds in one sitting to compare them),
#   TANSU_CPU (default 1: Kafka shares the generator's core and each server
#   has core 0 to itself, as in production where Kafka runs on other machines;
#   TANSU_CPU=0 puts Tansu on the servers' core instead),
#   MAX_OTHER=PERCENT (default 10: the table leaves out runs during which the
#   rest of the machine used more than that share of a core),
#   PERF=1 (record a CPU profile of the gateway during its last run into
#   load-tests/out/SCENARIO-gateway.perf.data; needs `perf`, software clock),
#   SYSCALLS=0 (do not count the servers' system calls; by default each run
#   counts them with `perf stat` on the syscall tracepoints, CSV next to the
#   run's JSON, and the table says n/a where perf cannot).
# Each server's context switches per thread and page faults are read from
# /proc around every run; see docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=${1:?usage: load-tests/run.sh SCENARIO [RUNS]}
runs=${2:-1}
file=load-tests/scenarios/$scenario.toml
[ -f "$file" ] || { echo "no scenario $file" >&2; exit 64; }
out=load-tests/out
mkdir -p "$out"
bin=${CARGO_TARGET_DIR:-target}/release
key=bench-key-0123456789

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --workspace --exclude postback-gateway-fuzz --locked
fi
if ! command -v tansu >/dev/null 2>&1; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

pids=()
spool=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$spool"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

kport=$("$bin/loadgen" free-port)
gport=$("$bin/loadgen" free-port)
aport=$("$bin/loadgen" free-port)
bport=$("$bin/loadgen" free-port)

taskset -c "${TANSU_CPU:-1}" tansu broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" \
  >"$out/tansu.log" 2>&1 &
tansu_pid=$!
pids+=("$tansu_pid")
wait_port "$kport"

taskset -c 0 env KAFKA_BROKERS="127.0.0.1:$kport" POSTBACK_API_KEY=$key POSTBACK_PIXEL_KEY=bench-pixel-key-0123456789 RUST_LOG=warn \
  LISTEN_ADDR="127.0.0.1:$gport" ADMIN_ADDR="127.0.0.1:$aport" SPOOL_DIR="$spool" \
  "${GATEWAY_BIN:-$bin/postback-gateway}" >"$out/gateway.log" 2>&1 &
gw_pid=$!
pids+=("$gw_pid")
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$aport/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$aport/readyz" >/dev/null || { echo "the gateway did not become ready" >&2; exit 1; }

taskset -c 0 "$bin/baseline" "127.0.0.1:$bport" >"$out/baseline.log" 2>&1 &
base_pid=$!
pids+=("$base_pid")
wait_port "$bport"

sleep 2
echo "gateway idle: $(grep VmRSS /proc/$gw_pid/status | tr -s ' \t' ' ')"
# CPU left over by anything else on the machine spoils the numbers: say so.
read -r _ u1 n1 s1 i1 _ < /proc/stat; sleep 1; read -r _ u2 n2 s2 i2 _ < /proc/stat
busy=$(( (u2 + n2 + s2) - (u1 + n1 + s1) )); total=$(( busy + i2 - i1 ))
# Each clock read is a system call where the clock source is not the TSC
# (some VMs): the gateway reads the clock about 15 times per postback.
echo "clock source: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo unknown)"
echo "machine busy before the run: $(( 100 * busy / (total > 0 ? total : 1) ))% of 2 cores (load average $(cut -d' ' -f1-3 /proc/loadavg))"

extra=()
[ "${SYSCALLS:-1}" != 0 ] && extra+=(--syscalls)
[ -n "${RATE:-}" ] && extra+=(--rate "$RATE")
[ -n "${DURATION:-}" ] && extra+=(--duration "$DURATION")
[ -n "${CONCURRENCY:-}" ] && extra+=(--concurrency "$CONCURRENCY")

alive() {
  for p in "$@"; do
    kill -0 "$p" 2>/dev/null || { echo "a server (pid $p) is gone; see $out/*.log" >&2; exit 1; }
  done
}

status=0
reports=()
stamp=$(date +%Y%m%d-%H%M%S)
for i in $(seq "$runs"); do
  alive "$tansu_pid" "$gw_pid" "$base_pid"
  taskset -c 1 "$bin/loadgen" run --scenario "$file" --target "127.0.0.1:$bport" \
    --baseline --label baseline --pid "$base_pid" --out "$out" --name "$scenario-baseline-$stamp-$i" \
    ${extra[@]+"${extra[@]}"} || status=1
  reports+=("$out/$scenario-baseline-$stamp-$i.json")
  alive "$tansu_pid" "$gw_pid" "$base_pid"
  perf_pid=
  if [ -n "${PERF:-}" ] && [ "$i" = "$runs" ]; then
    perf record -q -e cpu-clock -F 999 -g -p "$gw_pid" -o "$out/$scenario-gateway.perf.data" &
    perf_pid=$!
    pids+=("$perf_pid")
  fi
  taskset -c 1 "$bin/loadgen" run --scenario "$file" --target "127.0.0.1:$gport" \
    --api-key $key --brokers "127.0.0.1:$kport" --label gateway \
    --pid "$gw_pid" --pid "$tansu_pid" --out "$out" --name "$scenario-gateway-$stamp-$i" \
    ${extra[@]+"${extra[@]}"} || status=1
  reports+=("$out/$scenario-gateway-$stamp-$i.json")
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    echo "profile: perf report -i $out/$scenario-gateway.perf.data --no-children --sort symbol"
  fi
done

echo
"$bin/loadgen" table --max-other "${MAX_OTHER:-10}" "${reports[@]}" | tee "$out/$scenario-$stamp-table.md"
echo "gateway after the runs: $(grep -E 'VmRSS|VmHWM' /proc/$gw_pid/status | tr -s ' \t' ' ' | tr '\n' ' ')"
exit $status
