#!/usr/bin/env bash
# Runs the README's quick start ("Run it, register a phone, ring it") as a newcomer
# pastes it: the shell blocks of that section, in order, the stand-in's and the
# server's in the background as their own terminals would be, in a scratch copy of the
# layout they expect (.tmp/quick-start under the repository, ../../target/release).
# Fails unless `check` passes, the registration and the signed webhook are answered
# 204 and the VoIP push reaches the stand-in. Builds the two release binaries first, as
# the README does (seconds after CI's release build). Uses the README's fixed ports,
# 8080 and 8443. Usage: .ci/quick-start-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cargo build --release --locked -p webex-push -p apns-standin

scratch=$(mktemp -d)
pgids=()
cleanup() {
  for pgid in "${pgids[@]+"${pgids[@]}"}"; do kill -- "-$pgid" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT
mkdir -p "$scratch/repo"
ln -s "$root/target" "$scratch/repo/target"

# The section's ```sh blocks, one file each.
python3 - README.md "$scratch" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
section = text.split("### Run it, register a phone, ring it", 1)[1].split("\n### ", 1)[0]
blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
for i, block in enumerate(blocks, 1):
    open(f"{sys.argv[2]}/block-{i}.sh", "w").write(block)
print(f"quick start: {len(blocks)} shell blocks")
EOF
[ -f "$scratch/block-4.sh" ] && [ ! -f "$scratch/block-5.sh" ] || {
  echo "expected 4 shell blocks (stand-in, server, register, webhook) in the README section" >&2
  exit 1
}

# wait_for FILE TEXT: until FILE holds TEXT (20 s at most).
wait_for() {
  for _ in $(seq 1 200); do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

cd "$scratch/repo"
# Terminals 1 and 2, each in its own process group so that cleanup stops all of it.
setsid bash -e "$scratch/block-1.sh" >"$scratch/standin.log" 2>&1 &
pgids+=("$!")
wait_for "$scratch/standin.log" "https://localhost:8443"
setsid bash -e "$scratch/block-2.sh" >"$scratch/server.log" 2>&1 &
pgids+=("$!")
wait_for "$scratch/server.log" "check passed"
wait_for "$scratch/server.log" "listening"

bash -e "$scratch/block-3.sh" >"$scratch/register.out" 2>&1
grep -q "^HTTP/1.1 204" "$scratch/register.out" || {
  echo "the registration was not answered 204:" >&2
  cat "$scratch/register.out" >&2
  exit 1
}
bash -e "$scratch/block-4.sh" >"$scratch/webhook.out" 2>&1
grep -q "^HTTP/1.1 204" "$scratch/webhook.out" || {
  echo "the signed webhook was not answered 204:" >&2
  cat "$scratch/webhook.out" "$scratch/server.log" >&2
  exit 1
}
wait_for "$scratch/standin.log" '"apns-push-type":"voip"'
grep '"apns-push-type":"voip"' "$scratch/standin.log" | grep -q '"token":"5f3a21c9' || {
  echo "the ring did not reach the registered VoIP token:" >&2
  cat "$scratch/standin.log" >&2
  exit 1
}
echo "quick start passed: check, registration, signed webhook, VoIP push at the stand-in"
