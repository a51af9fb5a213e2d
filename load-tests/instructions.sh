#!/usr/bin/env bash
# Counts the instructions the gateway executes per reply, in user space, all
# threads (valgrind's callgrind), with a breakdown by component and the top
# functions. Unlike the time-based load tests, the count does not move with
# the machine's load or with neighbours on the host: ±1% between runs, so two
# builds compare in one run each, on any CPU.
#
# Usage: load-tests/instructions.sh [REQUESTS]   (default 20000)
# Environment: GATEWAY_BIN=PATH (measure that binary instead of the release
#   build here), SKIP_BUILD=1, TOP=N (functions listed, default 25).
# Needs valgrind (apt-get install valgrind) and Tansu (see scripts/test.sh).
#
# The gateway runs pinned to one CPU under callgrind against Tansu; the load
# generator sends 3,000 requests to warm it up, the counters are zeroed, then
# REQUESTS more (closed loop, 64 keep-alive connections, the load tests' mix)
# and the counters are dumped. Kernel work (system calls, the network stack)
# is not counted: run.sh measures it. `rep stos`/`rep movs` count one
# instruction per byte in callgrind, so memset/memcpy are listed apart: they
# cost far less time than their count suggests.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${1:-20000}
bin=${CARGO_TARGET_DIR:-target}/release
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 69; }
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --workspace --locked
fi
if ! command -v tansu >/dev/null 2>&1; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
gateway=${GATEWAY_BIN:-$bin/postback-gateway}
out=load-tests/out
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The closed keep-alive scenario's mix, with fewer connections and a count
# instead of a duration.
scenario() {
  sed -e "s/^name = .*/name = \"$1\"/" -e 's/^concurrency = .*/concurrency = 64/' \
    -e 's/^duration_secs = .*/duration_secs = 600/' -e "s/^max_requests = .*/max_requests = $2/" \
    -e 's/^request_timeout_ms = .*/request_timeout_ms = 30000/' \
    load-tests/scenarios/closed-keepalive.toml
}
scenario instructions-warm 3000 >"$work/warm.toml"
scenario instructions "$requests" >"$work/measure.toml"

kport=$("$bin/loadgen" free-port)
gport=$("$bin/loadgen" free-port)
aport=$("$bin/loadgen" free-port)
tansu broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" \
  >"$work/tansu.log" 2>&1 &
pids+=($!)
taskset -c 0 env KAFKA_BROKERS="127.0.0.1:$kport" POSTBACK_API_KEY=bench-key-0123456789 \
  POSTBACK_PIXEL_KEY=bench-pixel-key-0123456789 RUST_LOG=warn SPOOL_DIR="$work/spool" \
  LISTEN_ADDR="127.0.0.1:$gport" ADMIN_ADDR="127.0.0.1:$aport" \
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" --dump-instr=no \
  "$gateway" >"$work/gateway.log" 2>&1 &
gw=$!
pids+=("$gw")
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$aport/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$aport/readyz" >/dev/null || { echo "the gateway did not become ready; its log:" >&2; cat "$work/gateway.log" >&2; exit 1; }

"$bin/loadgen" run --scenario "$work/warm.toml" --target "127.0.0.1:$gport" --api-key bench-key-0123456789 \
  --label gateway --out "$work" --name warm >/dev/null
sleep 1
callgrind_control -z "$gw" >/dev/null
"$bin/loadgen" run --scenario "$work/measure.toml" --target "127.0.0.1:$gport" --api-key bench-key-0123456789 \
  --label gateway --out "$work" --name measure >/dev/null
sleep 0.5
callgrind_control -d "$gw" >/dev/null
sleep 1
dump=$(ls "$work"/callgrind.out.* | head -1)
stamp=$(date +%Y%m%d-%H%M%S)
cp "$dump" "$out/instructions-$stamp.callgrind"

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
echo "clock source: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo unknown)"
echo "gateway: $gateway"
python3 - "$dump" "$work/measure.json" "${TOP:-25}" "$(basename "$gateway")" <<'PY'
import collections, json, re, sys

path, report, top, binary = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
replies = json.load(open(report))["replies"]
names, objs = {}, {}
fn = callee = None
obj_of = {}
exclusive = collections.Counter()
calls_to = collections.Counter()
current_obj = None
pending = False
for line in open(path):
    line = line.rstrip("\n")
    m = re.match(r"(c?ob)=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            objs[m.group(2)] = m.group(3)
        if m.group(1) == "ob":
            current_obj = objs.get(m.group(2))
        continue
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        if m.group(1) == "fn":
            fn = m.group(2)
            obj_of.setdefault(fn, current_obj)
        else:
            callee = m.group(2)
        continue
    if line.startswith("calls="):
        pending = True
        count = int(line.split("=")[1].split()[0])
        continue
    if line and (line[0].isdigit() or line[0] in "+-*"):
        parts = line.split()
        if len(parts) < 2:
            continue
        if pending:
            pending = False
            calls_to[callee] += count
        else:
            exclusive[fn] += int(parts[1])

def component(key):
    name = names.get(key, key)
    obj = (obj_of.get(key) or "?").rsplit("/", 1)[-1]
    if obj != binary:
        if "memset" in name or "memcpy" in name or "memmove" in name:
            return "libc memset/memcpy (rep: counted per byte)"
        return obj
    s = name.lstrip("<")
    if s.startswith(("rd_", "LZ4", "XXH", "crc32")):
        return "librdkafka (C)"
    if s.startswith(("_mi_", "mi_")):
        return "mimalloc"
    crate = re.split(r"::|<| ", s)[0]
    return {"postback_gateway": "the gateway's own code"}.get(crate, crate)

total = sum(exclusive.values())
print(f"{total / replies:,.0f} instructions per reply ({replies} replies)")
groups = collections.Counter()
for key, cost in exclusive.items():
    groups[component(key)] += cost
for group, cost in groups.most_common(14):
    print(f"  {cost / replies:9,.0f}  {group}")
clock = sum(c for k, c in calls_to.items() if names.get(k, "").startswith("clock_gettime"))
print(f"clock_gettime calls per reply (precise and coarse): {clock / replies:.1f}")
print(f"top {top} functions (instructions per reply, own cost):")
for key, cost in exclusive.most_common(top):
    print(f"  {cost / replies:9,.0f}  {names.get(key, key)[:110]}")
PY
echo "callgrind file: $out/instructions-$stamp.callgrind (callgrind_annotate, kcachegrind)"
