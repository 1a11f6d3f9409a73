#!/usr/bin/env bash
# Schema-driven run of the HTTP API: schemathesis generates requests from the server's
# own /openapi.json and fails on any 5xx, any response that breaks the documented
# schema, status or content type, and any 4xx without an RFC 9457 problem body.
#
# The server is the debug binary (release with PROFILE=release) on SQLite, with the
# admin API on and the local APNs stand-in as Apple, so every route can answer.
#
#   tests/schemathesis/run.sh                  # 500 examples per operation, ~1 minute
#   MAX_EXAMPLES=5000 tests/schemathesis/run.sh  # longer
#
# Needs python3 (venv, pip), openssl and cargo. The venv lives in target/ (gitignored).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
here="tests/schemathesis"
profile="${PROFILE:-debug}"
max_examples="${MAX_EXAMPLES:-500}"
seed="${SEED:-20261128}"
venv="${SCHEMATHESIS_VENV:-$root/target/schemathesis-venv}"
admin_token="schemathesis-admin-token-0123456789"

if [[ ! -x "$venv/bin/schemathesis" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

cargo_profile=()
[[ "$profile" == release ]] && cargo_profile=(--release)
cargo build --quiet "${cargo_profile[@]}" -p webex-push --bin webex-push -p apns-standin --bin apns-standin
bin="$root/target/$profile"

work="$(mktemp -d "${TMPDIR:-/tmp}/webex-push-schemathesis.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# An APNs key of our own, trusted by the stand-in.
openssl ecparam -genkey -name prime256v1 -noout 2>/dev/null \
    | openssl pkcs8 -topk8 -nocrypt -out "$work/AuthKey_KEY1234567.p8"

# Waits up to 30 s for a line matching $2 in file $1 and prints it.
wait_for_line() {
    local file="$1" pattern="$2" line
    for _ in $(seq 1 300); do
        if line="$(grep -m1 -E "$pattern" "$file" 2>/dev/null)"; then
            printf '%s\n' "$line"
            return 0
        fi
        sleep 0.1
    done
    echo "no line matching '$pattern' in $file:" >&2
    cat "$file" >&2
    return 1
}

"$bin/apns-standin" --key-id KEY1234567 --team-id TEAM123456 \
    --public-key "$work/AuthKey_KEY1234567.p8" --ca-out "$work/ca.pem" \
    >"$work/standin.out" 2>"$work/standin.err" &
pids+=($!)
apns_url="$(wait_for_line "$work/standin.out" '^https://')"

# No WEBHOOK_SECRET: generated webhooks then reach the event reader instead of all
# stopping at the signature check (which the Rust tests cover); allowed because pushes
# go to the stand-in. No registration rate: thousands of generated registrations come
# from one address, and the limiter has its own tests (security.rs).
env -i PATH="$PATH" \
    HOST=127.0.0.1 PORT=0 LOG_FORMAT=json RUST_LOG=info REGISTER_RATE_PER_MINUTE=0 \
    DATABASE_URL="sqlite://$work/webex-push.db" \
    ADMIN_TOKEN="$admin_token" \
    APNS_KEY_FILE="$work/AuthKey_KEY1234567.p8" APNS_KEY_ID=KEY1234567 APNS_TEAM_ID=TEAM123456 \
    APNS_TOPIC=com.example.app APNS_ENDPOINT="$apns_url" APNS_CA_FILE="$work/ca.pem" \
    "$bin/webex-push" serve >"$work/server.log" 2>&1 &
pids+=($!)
address="$(wait_for_line "$work/server.log" '"message":"listening"' \
    | sed -E 's/.*"address":"([^"]+)".*/\1/')"
base="http://$address"
echo "webex-push at $base, APNs stand-in at $apns_url"

status=0
SCHEMATHESIS_HOOKS=problem_hooks PYTHONPATH="$root/$here" \
    "$venv/bin/schemathesis" run "$base/openapi.json" \
    --base-url "$base" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,problem_body_on_4xx \
    --data-generation-method all \
    --hypothesis-max-examples "$max_examples" \
    --hypothesis-seed "$seed" \
    --hypothesis-suppress-health-check all \
    --header "Authorization: Bearer $admin_token" \
    --request-timeout 10000 \
    --experimental=openapi-3.1 \
    --no-color || status=$?

# Our own errors only: actix-http logs a client's malformed request line or header at
# ERROR level too, and those are the client's fault.
if grep '"level":"ERROR"' "$work/server.log" | grep -q '"target":"webex_push'; then
    echo "the server logged errors:" >&2
    grep '"level":"ERROR"' "$work/server.log" | grep '"target":"webex_push' >&2
    status=1
fi
if ! kill -0 "${pids[1]}" 2>/dev/null; then
    echo "the server died:" >&2
    tail -50 "$work/server.log" >&2
    status=1
fi
exit "$status"
