#!/usr/bin/env bash
# The chaos test of the suite (tests/it/chaos.rs), for longer: postbacks stream
# into the release binary against a Tansu broker while the fault cycle runs
# CYCLES times (about 50 s each): the broker frozen for 3 s and for 12 s,
# the spool's disk full while the broker is frozen, the gateway killed
# (SIGKILL) and restarted, stopped with SIGTERM with the
# broker up and with the broker frozen. After each cycle it prints the
# gateway's resident memory and producer restarts; at the end it checks that
# every postback answered 200 is in the topic exactly once, that re-sends
# are DUPLICATE, that every SIGTERM ended with exit 0 within the grace period
# and that the spool is empty.
#
# Usage: load-tests/chaos.sh [CYCLES]     (default 10, about 9 minutes)
# Needs Tansu (scripts/test.sh installs it). Loopback only; it stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v tansu >/dev/null 2>&1; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
CHAOS_CYCLES=${1:-10} exec cargo nextest run --profile chaos --release --locked \
  --test it -E 'test(/^chaos::/)' --no-capture
