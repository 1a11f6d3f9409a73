#!/usr/bin/env bash
# Proves deploy/validate.sh catches what it claims to: runs it on a scratch copy of the
# deployment files, first untouched (must pass), then with one defect at a time (each must
# fail). Usage: deploy/validate_selftest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export DEPLOY_VENV=${DEPLOY_VENV:-$root/.tmp/deploy-venv}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
passed=0
failed=0

# A copy of everything validate.sh reads.
fresh_copy() {
  rm -rf "$scratch/repo"
  mkdir -p "$scratch/repo/crates/server"
  cp -r Dockerfile .dockerignore app.json heroku.yml Procfile Cargo.toml Cargo.lock \
    migrations deploy docs "$scratch/repo/"
  cp -r crates/server/src crates/server/Cargo.toml "$scratch/repo/crates/server/"
  if [ -d .ci ]; then cp -r .ci "$scratch/repo/"; fi
}

# expect OUTCOME NAME [EDIT...]: applies the edit (a shell snippet run in the copy), runs
# the validator and compares its exit status with OUTCOME (pass|fail).
expect() {
  local outcome=$1 name=$2 edit=${3:-true}
  fresh_copy
  (cd "$scratch/repo" && eval "$edit")
  local status=0
  "$scratch/repo/deploy/validate.sh" >"$scratch/out.log" 2>&1 || status=$?
  if { [ "$outcome" = pass ] && [ "$status" -eq 0 ]; } ||
    { [ "$outcome" = fail ] && [ "$status" -ne 0 ]; }; then
    passed=$((passed + 1))
    printf 'ok    %s (%s)\n' "$name" "$outcome"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s: expected %s, validator exited %d\n' "$name" "$outcome" "$status"
    tail -20 "$scratch/out.log"
  fi
}

k8s=deploy/kubernetes
expect pass "the files as committed"
expect fail "misspelt Kubernetes field" \
  "sed -i 's/readinessProbe:/readinesProbe:/' $k8s/base/deployment.yaml"
expect fail "readiness probe on the wrong path" \
  "sed -i 's#path: /readyz#path: /healthz#' $k8s/base/deployment.yaml"
expect fail "grace period shorter than preStop + drain" \
  "sed -i 's/terminationGracePeriodSeconds: 35/terminationGracePeriodSeconds: 20/' $k8s/base/deployment.yaml"
expect fail "replicas migrating on start" \
  "sed -i 's/MIGRATE_ON_START=false/MIGRATE_ON_START=true/' $k8s/base/kustomization.yaml"
expect fail "kustomization naming a missing file" \
  "sed -i 's/- service.yaml/- services.yaml/' $k8s/base/kustomization.yaml"
expect fail "ServiceMonitor with an unknown field" \
  "sed -i 's/scrapeTimeout: 10s/scrapeTimeot: 10s/' $k8s/components/monitoring/servicemonitor.yaml"
expect fail "an alert in the docs but not in the PrometheusRule" \
  "sed -i 's/expr: max(webex_push_push_queue_depth) > 100/expr: max(webex_push_push_queue_depth) > 50/' docs/operations.md"
expect fail "Ingress without TLS" \
  "sed -i '/^  tls:/,/secretName:/d' $k8s/components/ingress/ingress.yaml"
expect fail "Ingress exposing /metrics" \
  "sed -i 's#path: /webhook#path: /metrics#' $k8s/components/ingress/ingress.yaml"
expect fail "broken YAML in heroku.yml" \
  "printf 'build:\n  docker: [web\n' > heroku.yml"
expect fail "app.json with a field Heroku does not know" \
  "sed -i 's/\"stack\": \"container\",/\"stack\": \"container\", \"healthcheck\": \"\\/healthz\",/' app.json"
expect fail "app.json missing a config var the server reads" \
  "python3 -c 'import json; a=json.load(open(\"app.json\")); a[\"env\"].pop(\"PUSH_WORKERS\"); json.dump(a, open(\"app.json\", \"w\"))'"
expect fail "WEBHOOK_SECRET not generated" \
  "python3 -c 'import json; a=json.load(open(\"app.json\")); a[\"env\"][\"WEBHOOK_SECRET\"].pop(\"generator\"); json.dump(a, open(\"app.json\", \"w\"))'"
expect fail "Dockerfile running as root" "sed -i '/^USER /d' Dockerfile"
expect fail "Dockerfile building differently from CI" \
  "sed -i 's/cargo build --release --locked -p webex-push/cargo build --release -p webex-push/' Dockerfile"
expect fail ".dockerignore dropping the migrations" "echo /migrations >> .dockerignore"
expect fail ".dockerignore dropping the OpenAPI document" "echo /docs >> .dockerignore"
expect fail "systemd unit with an unknown key" \
  "sed -i 's/^NoNewPrivileges=yes/NoNewPrivilege=yes/' deploy/systemd/webex-push.service"
expect fail "systemd unit without hardening" \
  "sed -i '/^Protect/d; /^Private/d; /^SystemCall/d; /^Restrict/d; /^CapabilityBoundingSet/d; s/^DynamicUser=yes/DynamicUser=no/' deploy/systemd/webex-push.service"

printf 'validate selftest: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
