"""Cross-file checks for the deployment files that schemas cannot express.

Called by deploy/validate.sh with the rendered Kubernetes manifests; prints one line per
check ("ok ..." or "FAIL ...") and exits 1 if any check failed. Each check encodes a
promise docs/deployment.md makes (probes, drain timing, migrations run once, ...).
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    check(len(found) == 1, f"exactly one {kind} rendered (found {len(found)})")
    return found[0] if found else {}


def kubernetes(app_yaml: Path, migrate_yaml: Path) -> None:
    docs = load_all(app_yaml)
    dep = one(docs, "Deployment")
    svc = one(docs, "Service")
    pdb = one(docs, "PodDisruptionBudget")
    hpa = one(docs, "HorizontalPodAutoscaler")
    cms = by_kind(docs, "ConfigMap")
    monitors = by_kind(docs, "ServiceMonitor")

    spec = dep.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    containers = pod.get("containers", [])
    check(len(containers) == 1, "Deployment has one container")
    c = containers[0] if containers else {}

    check(spec.get("replicas", 1) >= 2, "Deployment runs 2+ replicas")
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    check(ru.get("maxUnavailable") == 0, "rolling update keeps maxUnavailable 0")

    probes = {k: c.get(k, {}).get("httpGet", {}) for k in ("readinessProbe", "livenessProbe", "startupProbe")}
    check(probes["readinessProbe"].get("path") == "/readyz", "readinessProbe asks /readyz")
    check(probes["livenessProbe"].get("path") == "/healthz", "livenessProbe asks /healthz")
    check(probes["startupProbe"].get("path") == "/healthz", "startupProbe asks /healthz")
    port_names = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    check(all(p.get("port") in port_names for p in probes.values()), "probes use a declared container port")

    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, "pod runs as non-root")
    check(csc.get("readOnlyRootFilesystem") is True, "container root filesystem is read-only")
    check(csc.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "all capabilities dropped")

    res = c.get("resources", {})
    check("memory" in res.get("requests", {}) and "memory" in res.get("limits", {}), "memory request and limit set")
    check("cpu" in res.get("requests", {}), "cpu request set (the HPA needs it)")

    # Environment: the Secret and the ConfigMap the server reads.
    env_from = c.get("envFrom", [])
    secret_refs = [e["secretRef"]["name"] for e in env_from if "secretRef" in e]
    cm_refs = [e["configMapRef"]["name"] for e in env_from if "configMapRef" in e]
    check(secret_refs == ["webex-push"], "env from the Secret webex-push")
    cm_names = {m["metadata"]["name"] for m in cms}
    check(bool(cm_refs) and all(n in cm_names for n in cm_refs), "envFrom ConfigMap is rendered alongside")
    config: dict[str, str] = {}
    for m in cms:
        if m["metadata"]["name"] in cm_refs:
            config.update(m.get("data", {}))

    check(config.get("MIGRATE_ON_START") == "false", "replicas do not migrate on start (the Job does)")
    for key in ("APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC", "APNS_ENVIRONMENT"):
        check(key in config, f"ConfigMap sets {key}")

    # Drain timing: grace period > preStop sleep + server drain.
    shutdown = int(config.get("SHUTDOWN_TIMEOUT_SECS", "0"))
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else -1
    check(sleep > 0, "preStop sleeps so endpoints drain before SIGTERM")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(shutdown > 0 and grace > shutdown + sleep,
          f"terminationGracePeriodSeconds {grace} > preStop {sleep} + SHUTDOWN_TIMEOUT_SECS {shutdown}")

    # The Service, PDB, HPA and ServiceMonitor all point at this Deployment's pods.
    def selects(selector: dict) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    check(selects(svc.get("spec", {}).get("selector", {})), "Service selects the Deployment's pods")
    target_ports = {p.get("targetPort") for p in svc.get("spec", {}).get("ports", [])}
    check(target_ports <= set(port_names) | set(port_names.values()), "Service targets a container port")
    check(selects(pdb.get("spec", {}).get("selector", {}).get("matchLabels", {})), "PDB selects the pods")
    check(pdb.get("spec", {}).get("minAvailable") == 1, "PDB keeps minAvailable 1")
    ref = hpa.get("spec", {}).get("scaleTargetRef", {})
    check(ref.get("kind") == "Deployment" and ref.get("name") == dep["metadata"]["name"], "HPA scales the Deployment")
    check(hpa.get("spec", {}).get("minReplicas", 1) >= 2, "HPA never scales below 2")
    metrics = hpa.get("spec", {}).get("metrics", [])
    check(any(m.get("resource", {}).get("name") == "cpu" for m in metrics), "HPA scales on CPU")
    svc_labels = svc.get("metadata", {}).get("labels", {})
    svc_port_names = {p.get("name") for p in svc.get("spec", {}).get("ports", [])}
    for mon in monitors:
        sel = mon["spec"]["selector"].get("matchLabels", {})
        check(all(svc_labels.get(k) == v for k, v in sel.items()), "ServiceMonitor selects the Service")
        check(all(e.get("port") in svc_port_names for e in mon["spec"]["endpoints"]), "ServiceMonitor port is a Service port name")
        check(all(e.get("path") == "/metrics" for e in mon["spec"]["endpoints"]), "ServiceMonitor scrapes /metrics")

    # The PrometheusRule ships the alerts docs/operations.md suggests, unchanged.
    rules = by_kind(docs, "PrometheusRule")
    check(len(rules) == 1, f"the example overlay renders one PrometheusRule (found {len(rules)})")
    documented = documented_alerts()
    for rule in rules:
        check(rule.get("spec", {}).get("groups") == documented.get("groups"),
              "the PrometheusRule's groups are the alerts of docs/operations.md")

    # The Ingress: TLS for every host (Webex calls https:// only), the two public routes
    # and nothing else (/metrics, /admin stay internal), to the Service's named port.
    ingresses = by_kind(docs, "Ingress")
    check(len(ingresses) == 1, f"the example overlay renders one Ingress (found {len(ingresses)})")
    for ing in ingresses:
        ispec = ing.get("spec", {})
        tls_hosts = {h for t in ispec.get("tls", []) if t.get("secretName") for h in t.get("hosts", [])}
        rules = ispec.get("rules", [])
        check(bool(rules) and all(r.get("host") in tls_hosts for r in rules),
              "every Ingress host has TLS with a certificate Secret")
        paths = [p for r in rules for p in r.get("http", {}).get("paths", [])]
        exposed = sorted(p.get("path", "") for p in paths)
        check(exposed == ["/register", "/webhook"], f"the Ingress exposes /register and /webhook only (found {exposed})")
        backends = [p.get("backend", {}).get("service", {}) for p in paths]
        check(bool(backends) and all(b.get("name") == svc.get("metadata", {}).get("name")
                                     and b.get("port", {}).get("name") in svc_port_names for b in backends),
              "Ingress routes to the Service's named port")

    # The migration Job: same image, runs `migrate`, reads DATABASE_URL from the Secret.
    jobs = by_kind(load_all(migrate_yaml), "Job")
    check(len(jobs) == 1, "one migration Job rendered")
    if jobs:
        jc = jobs[0]["spec"]["template"]["spec"]["containers"][0]
        check(jc.get("args") == ["migrate"], "Job runs `webex-push migrate`")
        check(jc.get("image") == c.get("image"), f"Job image {jc.get('image')} matches the Deployment's {c.get('image')}")
        db = [e for e in jc.get("env", []) if e.get("name") == "DATABASE_URL"]
        check(bool(db) and db[0].get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "webex-push",
              "Job reads DATABASE_URL from the Secret")


def documented_alerts() -> dict:
    """The YAML block under "## Suggested alerts" in docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## Suggested alerts", 1)[-1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    return yaml.safe_load(match.group(1)) if match else {}


# Config vars that app.json leaves out on purpose, and why (see docs/deployment.md).
HEROKU_OMITTED = {
    "PORT": "set by Heroku for the web dyno",
    "HOST": "the image defaults to 0.0.0.0",
    "DATABASE_URL": "set by the heroku-postgresql add-on",
    "APNS_KEY_FILE": "the key is the APNS_KEY config var on Heroku",
    "APNS_ENDPOINT": "testing against a stand-in only",
    "APNS_CA_FILE": "testing against a stand-in only",
    "FCM_SERVICE_ACCOUNT_FILE": "the account is the FCM_SERVICE_ACCOUNT config var on Heroku",
    "FCM_ENDPOINT": "testing against a stand-in only",
    "FCM_CA_FILE": "testing against a stand-in only",
    "WEBEX_API_URL": "testing or a proxy only; the default is Webex's API",
    "ALLOW_UNSIGNED_WEBHOOKS": "never on a public app: WEBHOOK_SECRET is generated",
}
HEROKU_REQUIRED = {"APNS_KEY", "APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC", "WEBHOOK_SECRET"}


def server_env_vars() -> set[str]:
    """Env var names the server declares (clap `env = "..."` or `env::var("...")`)."""
    names: set[str] = set()
    for rs in (ROOT / "crates" / "server" / "src").rglob("*.rs"):
        text = rs.read_text()
        names.update(re.findall(r'env\s*=\s*"([A-Z][A-Z0-9_]*)"', text))
        names.update(re.findall(r'env::var(?:_os)?\(\s*"([A-Z][A-Z0-9_]*)"', text))
    return names


def heroku() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    env = app.get("env", {})
    for key in sorted(HEROKU_REQUIRED):
        spec = env.get(key)
        check(isinstance(spec, dict) and spec.get("required") is True, f"app.json requires {key}")
    check(env.get("WEBHOOK_SECRET", {}).get("generator") == "secret", "WEBHOOK_SECRET is generated (generator: secret)")
    check(all(isinstance(v, dict) and v.get("description") for v in env.values()), "every app.json config var is described")
    check(not set(env) & set(HEROKU_OMITTED), f"app.json leaves out {sorted(HEROKU_OMITTED)}")
    # The server treats an empty value as unset, but Heroku's deploy form shows a blank
    # field as a question: an optional var carries its default or a generator instead.
    blank = sorted(k for k, v in env.items() if isinstance(v, dict) and not v.get("required")
                   and "value" not in v and "generator" not in v)
    check(not blank, f"every optional app.json var has a value or generator (blank: {blank})")
    addons = [a if isinstance(a, str) else a.get("plan", "") for a in app.get("addons", [])]
    check(any(a.split(":")[0] == "heroku-postgresql" for a in addons), "app.json provisions heroku-postgresql")
    check(app.get("formation", {}).get("web", {}).get("quantity", 0) >= 1, "app.json starts one web dyno")

    declared = server_env_vars()
    if declared:
        missing = sorted(declared - set(env) - set(HEROKU_OMITTED))
        check(not missing, f"every config var the server reads is in app.json (missing: {missing})")
        unknown = sorted(set(env) - declared - {"RUST_LOG"})
        if unknown:
            print(f"note  app.json vars the server source does not declare yet: {unknown}")
    else:
        print("note  crates/server/src declares no env vars yet: app.json not cross-checked against it")

    if app.get("stack") == "container":
        manifest = yaml.safe_load((ROOT / "heroku.yml").read_text())
        dockerfiles = manifest.get("build", {}).get("docker", {})
        check("web" in dockerfiles, "heroku.yml builds a web image")
        for proc, rel in dockerfiles.items():
            df = ROOT / rel
            check(df.is_file(), f"heroku.yml {proc} Dockerfile {rel} exists")
            # Heroku's build context is the Dockerfile's directory: it must be the root.
            check(df.parent == ROOT, f"heroku.yml {proc} Dockerfile sits at the root (Heroku's build context)")

    procfile = (ROOT / "Procfile").read_text().splitlines()
    procs = dict(line.split(":", 1) for line in procfile if line.strip() and not line.startswith("#"))
    check(all(re.fullmatch(r"[A-Za-z0-9_-]+", k) for k in procs), "Procfile process names are valid")
    check(procs.get("web", "").split()[:2] == ["webex-push", "serve"], "Procfile web runs `webex-push serve`")


# What the build reads besides crates/: the lock file, the migrations (embed_migrations!) and
# the OpenAPI document (include_str!). .ci/docker-context-build.sh builds in the real context.
REQUIRED_IN_CONTEXT = [
    "Cargo.toml",
    "Cargo.lock",
    "crates/server/Cargo.toml",
    "migrations/postgres",
    "migrations/sqlite",
    "docs/openapi.json",
]


def docker() -> None:
    text = (ROOT / "Dockerfile").read_text()
    build = "cargo build --release --locked -p webex-push"
    check(build in text, f"Dockerfile builds with `{build}`")
    ci = ROOT / ".ci" / "run"
    if ci.is_file():
        ci_text = ci.read_text()
        other = [ln.strip() for ln in ci_text.splitlines() if "cargo build" in ln and "--release" in ln and build not in ln]
        check(not other, f"CI has no different release build command ({other})")
        if build not in ci_text:
            print(f"note  .ci/run does not run `{build}` yet")
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    check(len(stages) >= 2, "Dockerfile is multi-stage")
    check(re.search(r"^USER\s+(?!0\b|root\b)\S+", text, re.M) is not None, "runtime stage runs as a non-root USER")
    check(re.search(r"^HEALTHCHECK\s", text, re.M) is not None, "Dockerfile has a HEALTHCHECK")
    check(re.search(r'^ENTRYPOINT \["webex-push"\]', text, re.M) is not None, "ENTRYPOINT is webex-push")
    check(re.search(r'^EXPOSE 8080', text, re.M) is not None, "EXPOSE 8080")
    ignore = ROOT / ".dockerignore"
    patterns = [p.strip().lstrip("/") for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for path in REQUIRED_IN_CONTEXT:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = [p for p in patterns if not p.startswith("!") and any(fnmatch.fnmatch(x, p) for x in prefixes)]
        check(not excluded and (ROOT / path).exists(), f"build context keeps {path}")


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: validate_policy.py RENDERED_APP.yaml RENDERED_MIGRATE.yaml", file=sys.stderr)
        return 2
    kubernetes(Path(sys.argv[1]), Path(sys.argv[2]))
    heroku()
    docker()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
