#!/usr/bin/env bash
# Measures webex-push's APNs client and two widely used peers (the a2 crate,
# @parse/node-apn) against the same local APNs stand-in, one after the other, at 1,
# 100 and 1,000 pushes in flight, and prints one markdown table.
#
# Each client gets a fresh stand-in process, whose counters (connections, distinct
# provider tokens) are printed when it stops. Needs cargo, node/npm, openssl.
# Usage: bench/apns-peers/run.sh [seconds per level, default 5]
# Honours CARGO_TARGET_DIR. A2_BENCH_PAYLOAD_BYTES=N pads a2's alert to N bytes of JSON
# (webex-push's bench alert is 300 bytes; a2's is 104 unpadded).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
seconds="${1:-5}"
target="${CARGO_TARGET_DIR:-$root/target}"
a2_target="${CARGO_TARGET_DIR:-$here/a2-runner/target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "building (release)..." >&2
(cd "$root" && cargo build --release -q -p apns-standin \
  && cargo bench -q -p webex-push-adapters --bench apns --no-run)
(cd "$here/a2-runner" && ./setup.sh >/dev/null && cargo build --release -q)
(cd "$here/node-apn" && npm install --no-audit --no-fund --silent)
bench_bin="$(cd "$root" && cargo bench -q -p webex-push-adapters --bench apns --no-run 2>&1 \
  | sed -n 's/.*(\(.*\))$/\1/p' | tail -1)"
case "$bench_bin" in
  "") ;;
  /*) ;;
  *) bench_bin="$root/$bench_bin" ;;
esac
if [ -z "$bench_bin" ]; then
  bench_bin="$(ls -t "$target"/release/deps/apns-* | grep -v '\.d$' | head -1)"
fi

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.p8" 2>/dev/null

start_standin() {
  "$target/release/apns-standin" --key-id KEY1234567 --team-id TEAM123456 \
    --public-key "$work/key.p8" --ca-out "$work/ca.pem" >"$work/standin.out" 2>"$work/standin.err" &
  standin_pid=$!
  for _ in $(seq 1 100); do
    [ -s "$work/standin.out" ] && break
    sleep 0.1
  done
  url="$(head -1 "$work/standin.out")"
}

stop_standin() {
  kill -INT "$standin_pid"
  wait "$standin_pid" || true
  echo "    stand-in: $(tail -1 "$work/standin.err")" >&2
}

echo "| client | in flight | pushes | failed | pushes/s | p50 ms | p99 ms |"
echo "|---|---:|---:|---:|---:|---:|---:|"

start_standin
echo "webex-push against $url" >&2
APNS_BENCH_ENDPOINT="$url" APNS_BENCH_CA="$work/ca.pem" APNS_BENCH_KEY="$work/key.p8" \
  APNS_BENCH_SECONDS="$seconds" "$bench_bin" | grep '^| webex-push' | cut -d'|' -f1-8 | sed 's/$/|/'
stop_standin

start_standin
echo "a2 against $url" >&2
"$a2_target/release/a2-runner" "$url" "$work/ca.pem" "$work/key.p8" "$seconds"
stop_standin

start_standin
echo "node-apn against $url" >&2
node "$here/node-apn/bench.js" "$url" "$work/ca.pem" "$work/key.p8" "$seconds"
stop_standin
