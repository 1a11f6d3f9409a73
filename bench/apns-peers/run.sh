#!/usr/bin/env bash
# Measures webex-push's APNs client and its peers side by side against ONE local APNs
# stand-in process: ours on one thread (as the server runs it) and on two workers, the
# a2 crate as shipped and with TCP_NODELAY, @parse/node-apn, and
# h2load (nghttp2's load generator: what the stand-in serves at most). Every client
# sends the same alert padded to the same size, at 1, 100 and 1,000 pushes in flight,
# each level in a process of its own so that its CPU time per push can be read
# (measure.py; start-up and the 0.5 s warm-up included, alike for every client).
# Prints one markdown table; the stand-in's counters go to stderr at the end.
#
# Needs cargo, node/npm, openssl, python3 and h2load (Debian: nghttp2-client).
# Usage: bench/apns-peers/run.sh [seconds per level, default 5]
# Env: APNS_PEERS_LEVELS (default 1,100,1000), APNS_PEERS_PAYLOAD_BYTES (default 300),
# CARGO_TARGET_DIR honoured.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
seconds="${1:-5}"
levels="${APNS_PEERS_LEVELS:-1,100,1000}"
bytes="${APNS_PEERS_PAYLOAD_BYTES:-300}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "building (release)..." >&2
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
standin_bin="$(cd "$root" && cargo build --release -p apns-standin --bin apns-standin \
  --message-format=json 2>/dev/null | executable apns-standin)"
bench_bin="$(cd "$root" && cargo bench -p webex-push-adapters --bench apns --no-run \
  --message-format=json 2>/dev/null | executable apns)"
[ -x "$standin_bin" ] && [ -x "$bench_bin" ] || { echo "build failed" >&2; exit 1; }
a2_target="${CARGO_TARGET_DIR:-$here/a2-runner/target}"
(cd "$here/a2-runner" && ./setup.sh >/dev/null && cargo build --release -q)
(cd "$here/node-apn" && npm install --no-audit --no-fund --silent)
command -v h2load >/dev/null || { echo "h2load not found (apt-get install nghttp2-client)" >&2; exit 1; }

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.p8" 2>/dev/null
"$standin_bin" --key-id KEY1234567 --team-id TEAM123456 \
  --public-key "$work/key.p8" --ca-out "$work/ca.pem" >"$work/standin.out" 2>"$work/standin.err" &
standin_pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/standin.out" ] && break
  sleep 0.1
done
url="$(head -1 "$work/standin.out")"
echo "stand-in at $url (pid $standin_pid), $seconds s per level, $bytes-byte payloads" >&2

measure() { python3 "$here/measure.py" "$@"; }

echo "| client | in flight | pushes | failed | pushes/s | p50 ms | p99 ms | client CPU µs/push |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
IFS=, read -ra level_list <<<"$levels"
for level in "${level_list[@]}"; do
  # Ours on one thread (as the server runs it, RELAY_THREADS=1) and on two workers.
  for threads in 1 2; do
    APNS_BENCH_ENDPOINT="$url" APNS_BENCH_CA="$work/ca.pem" APNS_BENCH_KEY="$work/key.p8" \
      APNS_BENCH_SECONDS="$seconds" APNS_BENCH_LEVELS="$level" APNS_BENCH_CLIENT_THREADS="$threads" \
      measure sh -c "\"$bench_bin\" | grep '^| webex-push' | cut -d'|' -f1-8 | sed 's/\$/|/'"
  done
  A2_BENCH_LEVELS="$level" A2_BENCH_PAYLOAD_BYTES="$bytes" \
    measure "$a2_target/release/a2-runner" "$url" "$work/ca.pem" "$work/key.p8" "$seconds"
  A2_TCP_NODELAY=1 A2_BENCH_LEVELS="$level" A2_BENCH_PAYLOAD_BYTES="$bytes" \
    measure "$a2_target/release/a2-runner" "$url" "$work/ca.pem" "$work/key.p8" "$seconds"
  NODE_APN_LEVELS="$level" NODE_APN_PAYLOAD_BYTES="$bytes" \
    measure node "$here/node-apn/bench.js" "$url" "$work/ca.pem" "$work/key.p8" "$seconds"
  if [ "$level" -ge 100 ]; then
    measure "$here/h2load.sh" "$url" "$work/ca.pem" "$work/key.p8" "$seconds" "$level" "$bytes"
  fi
done

kill -INT "$standin_pid"
wait "$standin_pid" || true
echo "stand-in: $(tail -1 "$work/standin.err")" >&2
