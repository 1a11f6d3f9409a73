#!/usr/bin/env bash
# h2load (nghttp2's load generator) posting one alert push back to back for SECONDS at
# IN_FLIGHT streams on one connection: the most the stand-in serves, to compare each
# client with. Prints one row like the other clients (p50/p99: h2load reports none).
# Usage: h2load.sh <url> <ca.pem> <key.p8> <seconds> <in flight> <payload bytes>
set -euo pipefail
url="$1" key="$3" seconds="$4" in_flight="$5" bytes="$6"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
jwt="$(node "$(dirname "$0")/jwt.js" "$key")"
python3 - "$bytes" >"$work/body.json" <<'PY'
import json, sys
base = {"aps": {"alert": {"title": "New message", "body": "ada@example.com"}, "sound": "default"}}
size = len(json.dumps(base, separators=(",", ":"))) + len(',"webex":""')
base["webex"] = "x" * max(0, int(sys.argv[1]) - size)
sys.stdout.write(json.dumps(base, separators=(",", ":")))
PY
token="$(printf '%064x' 4096)"
expiration=$(( $(date +%s) + 3600 ))
out="$(h2load -D "${seconds}s" --warm-up-time=500ms -c 1 -t 1 -m "$in_flight" -d "$work/body.json" \
  -H "authorization: bearer $jwt" -H "apns-topic: com.example.app" \
  -H "apns-push-type: alert" -H "apns-priority: 10" -H "apns-expiration: $expiration" \
  -H "content-type: application/json" "$url/3/device/$token")"
done_count="$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<<"$out")"
failed="$(sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p' <<<"$out")"
rate="$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")"
# "time for request:  <min> <max> <mean> <sd> <+/- sd>"
mean="$(awk '/^time for request:/ {print $6}' <<<"$out")"
status_2xx="$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' <<<"$out")"
if [ -z "$done_count" ] || [ -z "$rate" ] || [ -z "$status_2xx" ]; then
  echo "$out" >&2
  exit 1
fi
printf '| h2load %s, mean %s | %s | %s | %s | %.0f | n/a | n/a |\n' \
  "$(h2load --version | awk '{print $2; exit}')" "$mean" "$in_flight" "$done_count" \
  "$(( ${failed:-0} + (done_count > status_2xx ? done_count - status_2xx : 0) ))" "$rate"
