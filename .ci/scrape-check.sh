#!/usr/bin/env bash
# Starts the release binary (embedded SQLite in a scratch directory, no APNs key),
# sends it a little traffic so the labelled series exist, scrapes /metrics and runs
# `promtool check metrics` on the scrape: HELP and TYPE on every family, names and
# suffixes Prometheus' conventions accept. Also checks the Content-Type names the
# format served. Usage: .ci/scrape-check.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/release/webex-push}
[ -x "$binary" ] || {
  echo "no $binary: build it first (cargo build --release --locked -p webex-push)" >&2
  exit 1
}
command -v promtool >/dev/null 2>&1 || {
  echo "promtool not found (Debian: apt-get install prometheus)" >&2
  exit 1
}
binary=$(realpath "$binary")

scratch=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT

(cd "$scratch" && exec env -i PATH="$PATH" HOST=127.0.0.1 PORT=0 LOG_FORMAT=json \
  WEBHOOK_SECRET=scrape-check "$binary" serve >"$scratch/log" 2>&1) &
pid=$!
base=
for _ in $(seq 1 100); do
  address=$(sed -n 's/.*"message":"listening".*"address":"\([^"]*\)".*/\1/p' "$scratch/log" | head -1)
  if [ -n "$address" ]; then base="http://$address"; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$base" ] || { echo "the server did not start:" >&2; cat "$scratch/log" >&2; exit 1; }

# Traffic for the labelled families: a route, an unmatched path, a refused webhook.
curl -s -o /dev/null "$base/healthz"
curl -s -o /dev/null "$base/no-such-path"
curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' "$base/webhook"

curl -s -D "$scratch/headers" -o "$scratch/metrics" "$base/metrics"
content_type=$(sed -n 's/^[Cc]ontent-[Tt]ype: *\(.*\)\r$/\1/p' "$scratch/headers")
if [ "$content_type" != "text/plain; version=0.0.4; charset=utf-8" ]; then
  echo "/metrics is Prometheus text 0.0.4 but says Content-Type: $content_type" >&2
  exit 1
fi
families=$(grep -c '^# TYPE ' "$scratch/metrics" || true)
echo "scraped $families metric families from $base/metrics"
for required in webex_push_build_info webex_push_http_request_duration_seconds \
  process_cpu_seconds_total process_resident_memory_bytes; do
  grep -q "^# TYPE $required " "$scratch/metrics" || {
    echo "missing from the scrape: $required" >&2
    exit 1
  }
done
promtool check metrics <"$scratch/metrics"
echo "promtool check metrics passed"
