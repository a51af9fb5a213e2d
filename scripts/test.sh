#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine with only the Rust toolchain:
# installs what the tests need (a C toolchain and OpenSSL and libcurl headers for
# librdkafka, the Tansu broker, stunnel4, cargo-nextest, promtool, nginx, chromium,
# valgrind), checks formatting and lints, checks the instruction budget, then runs
# every test.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v perl >/dev/null 2>&1 || missing+=(perl)
# tests/it/deploy.rs reads the libraries the binary links with readelf.
command -v readelf >/dev/null 2>&1 || missing+=(binutils)
# promtool checks deploy/prometheus (tests/it/deploy.rs); nginx balances two
# gateways in tests/it/scale_out.rs. Debian's `prometheus` package ships promtool.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
# tests/it/browser.rs loads a landing page in headless Chromium.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# librdkafka's TLS and SCRAM (OpenSSL) and its OAUTHBEARER/OIDC client (libcurl).
for dev in libssl-dev libcurl4-openssl-dev pkg-config; do
  dpkg -s "$dev" >/dev/null 2>&1 || missing+=("$dev")
done
# tests/it/secure_kafka.rs puts TLS in front of Tansu, whose own TLS cannot take
# a certificate and a key together in 0.6; openssl makes the test certificates.
command -v stunnel4 >/dev/null 2>&1 || missing+=(stunnel4)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The instruction budget below counts under valgrind's callgrind, waits for
# the gateway with curl and sums the count with python3.
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v curl >/dev/null 2>&1 || missing+=(curl)


if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -q
  # Check the names first, so a missing package fails here with a clear message.
  for p in "${missing[@]}"; do
    apt-cache show "$p" >/dev/null 2>&1 || { echo "no Debian package $p" >&2; exit 1; }
  done
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! command -v tansu >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
# The libsql feature gives Tansu a storage that keeps SCRAM users across the
# restart that turns authentication on (tests/it/secure_kafka.rs).
tansu_features() {
  grep -o "\"tansu $TANSU_VERSION [^}]*" "${CARGO_HOME:-$HOME/.cargo}/.crates2.json" 2>/dev/null \
    | grep -o '"features":\[[^]]*\]' || true
}
if ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION" || ! tansu_features | grep -q libsql; then
  echo "==> installing the Tansu broker $TANSU_VERSION (takes about 15 minutes, once)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
fi
# .config/nextest.toml orders tests by priority: nextest 0.9.91 or later.
nextest_is_recent() {
  local v
  v=$(cargo nextest --version 2>/dev/null | head -n1 | grep -o '[0-9]*\.[0-9]*\.[0-9]*' | head -n1)
  [ -n "$v" ] && [ "$(printf '%s\n' 0.9.91 "$v" | sort -V | head -n1)" = 0.9.91 ]
}
if ! nextest_is_recent; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The regression guard: the gateway's user-space instructions per reply (a
# release build under callgrind against Tansu, 3,000 requests to warm up, then
# the budget file's count) against the budget committed in the file, 5% margin.
# It builds the release binaries (fat LTO: a few minutes after a change) and
# runs for about a minute; it fails the suite with the figures and how to
# update the budget when a change costs more.
echo "==> instruction budget"
bash load-tests/instructions.sh --check load-tests/instructions-budget.txt
# The fault switches the tests use (src/sink/faults.rs) exist only with the
# `fault-injection` feature, which a release build never has: the binary the
# budget step just built must not contain them (their module is `faults::on`).
echo "==> the release binary has no fault switches"
if grep -aq 'faults2on' "${CARGO_TARGET_DIR:-target}/release/postback-gateway"; then
  echo "target/release/postback-gateway contains the fault switches (sink::faults::on): a release build must not enable the fault-injection feature" >&2
  exit 1
fi
echo "==> tests"
cargo nextest run --workspace --locked --no-fail-fast
