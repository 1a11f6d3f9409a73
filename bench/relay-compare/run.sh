#!/usr/bin/env bash
# webex-push against another relay, side by side in one series: the load tool runs the
# same phases against each (fresh database, same persons, rates and connections),
# interleaved for ROUNDS rounds, and one table compares them per phase: accepted
# webhooks/s, refused, lost, p99 webhook -> push, the relay's and Postgres' CPU per
# accepted webhook, and memory. The default other relay is bench/node-relay (express,
# pg, node-apn), the yardstick of issue 19.
#
# Usage: bench/relay-compare/run.sh [ROUNDS, default 2] [-- load tool flags...]
#   e.g. bench/relay-compare/run.sh 2 -- --persons 10000 --rate 1000 --duration 20 --max-duration 20 --connections 16
# Env: OTHER_RELAY (a command the load tool can start as --server-bin; default
# bench/node-relay/run.sh) and OTHER_LABEL (its name in the table), WEBEX_PUSH_BIN
# (default: the release build), CARGO_TARGET_DIR.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rounds="${1:-2}"
shift || true
[ "${1:-}" = "--" ] && shift
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(--persons 10000 --rate 1000 --duration 20 --max-duration 20 --connections 16)
other="${OTHER_RELAY:-$root/bench/node-relay/run.sh}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "building (release)..." >&2
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"
ours="${WEBEX_PUSH_BIN:-$(cd "$root" && cargo build --release -p webex-push --bin webex-push \
  --message-format=json 2>/dev/null | executable webex-push)}"
load="$(cd "$root" && cargo build --release -p webex-push-tools --bin webex-push-load \
  --message-format=json 2>/dev/null | executable webex-push-load)"
[ -x "$ours" ] && [ -x "$load" ] || { echo "build failed" >&2; exit 1; }

for round in $(seq 1 "$rounds"); do
  for relay in ours other; do
    bin="$ours"
    [ "$relay" = other ] && bin="$other"
    echo "round $round: $relay ($bin), $(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    "$load" --server-bin "$bin" "${flags[@]}" --report-json "$work/$relay-$round.json" \
      >"$work/$relay-$round.txt" 2>&1 || { cat "$work/$relay-$round.txt" >&2; exit 1; }
  done
done
python3 "$here/summarize.py" "$work" webex-push "${OTHER_LABEL:-$(basename "$(dirname "$other")")}"
