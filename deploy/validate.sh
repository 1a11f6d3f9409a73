#!/usr/bin/env bash
# Validates the deployment files as far as a machine without Docker, a cluster or Heroku
# allows: YAML well-formedness, the kustomize renders, Kubernetes schemas (strict, two
# Kubernetes versions), the ServiceMonitor and app.json against their JSON schemas, the
# Dockerfile (hadolint), the systemd unit (systemd-analyze), and the cross-file promises
# in deploy/validate_policy.py (the TLS Ingress of the example overlay included). Exits
# non-zero if anything is invalid.
#
# Tools go into a virtualenv under .tmp/ (override with DEPLOY_VENV), never the system.
# Usage: deploy/validate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

venv=${DEPLOY_VENV:-$root/.tmp/deploy-venv}
# Oldest and newest Kubernetes versions the manifests must be valid for.
k8s_versions=(1.28.0 1.37.0)

passed=0
failed=0
failed_names=()
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { printf '\n==> %s\n' "$*"; }
# run NAME CMD...: runs one check, records the outcome, never aborts the script.
run() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
    printf 'PASS  %s\n' "$name"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    printf 'FAIL  %s\n' "$name"
  fi
}

log "tools (virtualenv $venv)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements-validate.txt
bin=$venv/bin

# Kustomize: kubectl's built-in one, else a standalone kustomize, else a plain
# concatenation of the base's resources (overlays then cannot be rendered).
kustomize_build() {
  if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize "$1"
  elif command -v kustomize >/dev/null 2>&1; then
    kustomize build "$1"
  else
    return 127
  fi
}
k8s=deploy/kubernetes

log "YAML well-formedness (yamllint)"
mapfile -t yaml_files < <(find deploy -name '*.yaml' -o -name '*.yml' | sort)
yaml_files+=(heroku.yml)
run "yamllint" "$bin/yamllint" --strict -c deploy/yamllint.yaml "${yaml_files[@]}"

log "kustomize renders"
render_ok=true
for target in base overlays/example overlays/example-migrate migrate; do
  out=$work/$(echo "$target" | tr / -).yaml
  if kustomize_build "$k8s/$target" >"$out" 2>"$work/kustomize.err"; then
    passed=$((passed + 1))
    printf 'PASS  kustomize build %s (%s objects)\n' "$target" "$(grep -c '^kind:' "$out")"
  elif [ $? -eq 127 ]; then
    echo "note  no kubectl or kustomize: rendering $target by concatenation"
    if [ "$target" = base ] || [ "$target" = migrate ]; then
      "$bin/python" - "$k8s/$target" >"$out" <<'EOF'
import sys, yaml, pathlib
root = pathlib.Path(sys.argv[1])
k = yaml.safe_load((root / "kustomization.yaml").read_text())
docs = [d for r in k.get("resources", []) for d in yaml.safe_load_all((root / r).read_text()) if d]
for gen in k.get("configMapGenerator", []):
    data = dict(l.split("=", 1) for l in gen.get("literals", []))
    docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
print(yaml.safe_dump_all(docs, sort_keys=False))
EOF
    else
      render_ok=false
      failed=$((failed + 1))
      failed_names+=("kustomize build $target (no kustomize available)")
    fi
  else
    cat "$work/kustomize.err"
    render_ok=false
    failed=$((failed + 1))
    failed_names+=("kustomize build $target")
    printf 'FAIL  kustomize build %s\n' "$target"
  fi
done

log "Kubernetes schemas (kubernetes-validate --strict)"
# Core kinds must all have a schema: a "Couldn't find schema" warning for anything but
# the ServiceMonitor and PrometheusRule CRDs (checked below) fails the run.
k8s_validate() {
  local version=$1
  shift
  local out
  out=$("$bin/kubernetes-validate" --strict --quiet -k "$version" "$@" 2>&1) || {
    echo "$out"
    return 1
  }
  if echo "$out" | grep -v -e "kind ServiceMonitor" -e "kind PrometheusRule" \
    | grep -q "Couldn't find schema"; then
    echo "$out"
    return 1
  fi
}
for version in "${k8s_versions[@]}"; do
  run "kubernetes-validate $version: rendered manifests + secret example" \
    k8s_validate "$version" "$work"/*.yaml "$k8s/base/secret.example.yaml"
done

log "ServiceMonitor (CRD subset schema)"
run "ServiceMonitor schema" \
  "$bin/check-jsonschema" --schemafile deploy/schemas/servicemonitor.schema.json \
  "$k8s/components/monitoring/servicemonitor.yaml"

log "PrometheusRule (CRD subset schema, promtool check rules)"
run "PrometheusRule schema" \
  "$bin/check-jsonschema" --schemafile deploy/schemas/prometheusrule.schema.json \
  "$k8s/components/monitoring/prometheusrule.yaml"
if command -v promtool >/dev/null 2>&1; then
  # The rule groups as a Prometheus rule file: the expressions must parse.
  "$bin/python" -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); yaml.safe_dump({"groups": d["spec"]["groups"]}, sys.stdout)' \
    "$k8s/components/monitoring/prometheusrule.yaml" >"$work/rules.yaml"
  run "promtool check rules" promtool check rules "$work/rules.yaml"
else
  echo "note  promtool not installed (Debian: prometheus): alert expressions not checked"
fi

log "Heroku app.json (schema)"
run "app.json schema" \
  "$bin/check-jsonschema" --schemafile deploy/schemas/app-json.schema.json app.json

log "Dockerfile (hadolint)"
run "hadolint Dockerfile" "$bin/hadolint" Dockerfile

log "systemd unit (systemd-analyze)"
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants ExecStart's binary to exist: point it at a stub in a scratch copy.
  stub=$work/systemd
  mkdir -p "$stub"
  printf '#!/bin/sh\nexit 0\n' >"$stub/webex-push"
  chmod +x "$stub/webex-push"
  sed "s#/usr/local/bin/webex-push#$stub/webex-push#" deploy/systemd/webex-push.service \
    >"$stub/webex-push.service"
  # verify exits 0 on unknown keys and only warns: treat any output as a failure.
  verify_unit() {
    local out
    out=$(systemd-analyze verify "$stub/webex-push.service" 2>&1) || {
      echo "$out"
      return 1
    }
    [ -z "$out" ] || {
      echo "$out"
      return 1
    }
  }
  run "systemd-analyze verify" verify_unit
  # Exposure score (0 best .. 10 worst); the unit must stay in the "OK" band.
  security_unit() {
    systemd-analyze security --offline=yes --threshold=20 "$stub/webex-push.service" \
      | tail -1
  }
  run "systemd-analyze security (exposure <= 2.0)" security_unit
else
  echo "note  systemd-analyze not installed: unit not checked"
fi

log "shell scripts (shellcheck)"
run "shellcheck deploy/validate.sh" "$bin/shellcheck" deploy/validate.sh

log "cross-file checks (deploy/validate_policy.py)"
if $render_ok; then
  run "policy" "$bin/python" deploy/validate_policy.py \
    "$work/overlays-example.yaml" "$work/overlays-example-migrate.yaml"
else
  failed=$((failed + 1))
  failed_names+=("policy (renders missing)")
fi

printf '\n'
for name in "${failed_names[@]+"${failed_names[@]}"}"; do
  printf 'failed: %s\n' "$name"
done
printf 'deploy: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
