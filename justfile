# Everyday recipes. Each one is a plain command you can also run without `just`.

set dotenv-load := false

# List the recipes.
default:
    @just --list

# Run the server (embedded SQLite unless DATABASE_URL is set).
run *ARGS:
    cargo run --release -p webex-push -- {{ARGS}}

# The whole flow locally, nothing to set up: APNs stand-in, SQLite, signed webhooks, the pushes shown.
demo:
    cargo build --release -p webex-push
    cargo run --release -p webex-push-tools --bin webex-push-demo

# End-to-end load run on Postgres at 127.0.0.1:5432 (docs/performance.md); e.g. `just bench --persons 20000`.
bench *ARGS:
    cargo build --release -p webex-push
    cargo run --release -p webex-push-tools --bin webex-push-load -- {{ARGS}}

# The whole test suite (starts a throwaway PostgreSQL unless TEST_DATABASE_URL is set).
test:
    cargo test --workspace

# Fault, hostile-input and security suites (real binary, Postgres, APNs stand-in).
faults:
    cargo test -p webex-push --test it -- faults:: hostile:: security::

# Schema-driven run of the HTTP API against /openapi.json (schemathesis).
schemathesis:
    bash tests/schemathesis/run.sh

# Fuzz the parsers for SECONDS per target (default 30).
fuzz SECONDS="30":
    bash fuzz/run.sh {{SECONDS}}

# Validate the deployment files (Kubernetes, Heroku, Dockerfile, systemd).
deploy-check:
    bash deploy/validate.sh

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Apply the database migrations and exit.
migrate:
    cargo run --release -p webex-push -- migrate

# Everything CI runs, on this machine.
ci:
    bash .ci/run
