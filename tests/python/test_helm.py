#!/usr/bin/env python3
"""Render the Helm chart (helm/turbo-coder) offline and check what comes out.

    python3 tests/python/test_helm.py        # or: python3 -m pytest tests/python/test_helm.py
    python3 tests/python/test_helm.py --require   # a missing renderer fails instead of skipping (CI)

Renders with helm-python-sdk (`python3 -m pip install helm-python-sdk`: Helm's own Go engine as
a library, no helm binary, no cluster), or with a `helm` binary on PATH when that package is
missing; with neither it says so and skips (exit 0). Needs PyYAML. Cases: the default values
(the bundled NATS and Postgres wired into every service), both disabled, `env` replacing the
chart's settings, a storage class, and a refused Postgres user name. Prints "N passed, N failed"
and exits non-zero when a check fails.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "turbo-coder"
CONFIG_RS = REPO / "crates" / "config" / "src" / "lib.rs"
RELEASE = "demo"
NAMESPACE = "turbo"
FULLNAME = "demo-turbo-coder"
NATS_URL = f"nats://{FULLNAME}-nats:4222"
TOOL_RUNNER_URL = f"http://{FULLNAME}-tool-runner:50054"
KNOWLEDGE_URL = f"http://{FULLNAME}-knowledge:50053"
STORE_URL = f"postgres://turbo:$(TURBO_PG_PASSWORD)@{FULLNAME}-postgres:5432/turbo"
ROLES = ["planner", "coder", "tester", "reviewer"]
TURBO_DEPLOYMENTS = {f"{FULLNAME}-{c}" for c in ["gateway", "orchestrator", "knowledge", "tool-runner"]} | {
    f"{FULLNAME}-agent-worker-{r}" for r in ROLES
}

try:
    import yaml
except ImportError:
    yaml = None

try:
    import helm_python
except ImportError:
    helm_python = None

HELM_BIN = shutil.which("helm")
SETUP = "python3 -m pip install helm-python-sdk pyyaml"


def skip_reason():
    if yaml is None:
        return f"PyYAML is not installed ({SETUP})"
    if helm_python is None and HELM_BIN is None:
        return f"no chart renderer: neither helm-python-sdk nor a helm binary ({SETUP})"
    return None


class RenderError(Exception):
    pass


def render(values=None):
    """The chart's manifests as {template path: text}; NOTES.txt only with helm-python-sdk."""
    if helm_python is not None:
        try:
            with helm_python.Chart.load(str(CHART)) as chart:
                return chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm_python.HelmError as e:
            raise RenderError(str(e)) from e
    with tempfile.TemporaryDirectory() as tmp:
        args = [HELM_BIN, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--output-dir", tmp]
        if values is not None:
            path = Path(tmp) / "values.json"  # JSON is YAML
            path.write_text(json.dumps(values))
            args += ["--values", str(path)]
        run = subprocess.run(args, capture_output=True, text=True)
        if run.returncode != 0:
            raise RenderError(run.stderr)
        return {str(p.relative_to(tmp)): p.read_text() for p in Path(tmp).rglob("*.yaml")}


def objects(manifests):
    """Every Kubernetes object rendered, parsed (a template that is not YAML fails here)."""
    out = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            assert isinstance(doc, dict) and "kind" in doc, f"{path}: not an object: {doc!r}"
            out.append(doc)
    names = [(o["kind"], o["metadata"]["name"]) for o in out]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"
    return out


def notes(manifests):
    return next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), None)


def by_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def container(workload):
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return containers[0]


def env_of(workload):
    return container(workload).get("env", [])


def env_value(workload, name):
    found = [e for e in env_of(workload) if e["name"] == name]
    assert len(found) <= 1, f"{workload['metadata']['name']}: {name} set {len(found)} times"
    return found[0] if found else None


def check_services_select_pods(objs):
    """Every Service selects the pods of exactly one workload."""
    workloads = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    for name, svc in by_kind(objs, "Service").items():
        selector = svc["spec"]["selector"]
        matched = [
            w["metadata"]["name"]
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, f"Service {name} selects {matched}"
    for w in workloads:
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert w["spec"]["selector"]["matchLabels"].items() <= labels.items(), w["metadata"]["name"]


def check_config_keys(config_toml):
    """The rendered config parses as TOML and names only fields crates/config knows."""
    config = tomllib.loads(config_toml)
    source = CONFIG_RS.read_text()
    for section, table in config.items():
        assert re.search(rf"pub {section}: ", source), f"config: unknown section [{section}]"
        for key in table:
            assert re.search(rf"pub {key}: ", source), f"config: unknown key {section}.{key}"
    return config


def test_default_values():
    manifests = render()
    objs = objects(manifests)
    deployments = by_kind(objs, "Deployment")
    statefulsets = by_kind(objs, "StatefulSet")
    assert set(deployments) == TURBO_DEPLOYMENTS, sorted(deployments)
    assert set(statefulsets) == {f"{FULLNAME}-nats", f"{FULLNAME}-postgres"}, sorted(statefulsets)
    assert set(by_kind(objs, "Service")) == TURBO_DEPLOYMENTS | set(statefulsets)
    assert set(by_kind(objs, "Secret")) == {f"{FULLNAME}-postgres", f"{FULLNAME}-gateway"}
    assert set(by_kind(objs, "ConfigMap")) == {f"{FULLNAME}-config"}
    check_services_select_pods(objs)

    config = check_config_keys(by_kind(objs, "ConfigMap")[f"{FULLNAME}-config"]["data"]["config.toml"])
    assert config["cluster"]["nats_url"] == NATS_URL, config["cluster"]

    orchestrator = deployments[f"{FULLNAME}-orchestrator"]
    assert orchestrator["spec"]["replicas"] == 2
    assert orchestrator["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == "100%"
    ready = container(orchestrator)["readinessProbe"]["grpc"]
    assert ready["service"] == "turbo.tasks.v1.TaskService", ready

    for name, deployment in deployments.items():
        names = [e["name"] for e in env_of(deployment)]
        assert env_value(deployment, "TURBO_CODER__CLUSTER__NATS_URL")["value"] == NATS_URL, name
        assert env_value(deployment, "TURBO_CODER__CLUSTER__TOOL_RUNNER_URL")["value"] == TOOL_RUNNER_URL, name
        assert env_value(deployment, "TURBO_CODER__KNOWLEDGE__URL")["value"] == KNOWLEDGE_URL, name
        assert env_value(deployment, "TURBO_CODER__STORE__URL")["value"] == STORE_URL, name
        secret = env_value(deployment, "TURBO_PG_PASSWORD")["valueFrom"]["secretKeyRef"]
        assert secret == {"name": f"{FULLNAME}-postgres", "key": "password"}, secret
        # $(VAR) expands only variables defined earlier in the list.
        assert names.index("TURBO_PG_PASSWORD") < names.index("TURBO_CODER__STORE__URL"), names

    # Only the tool-runner's container may make the user namespaces bubblewrap needs.
    runner = container(deployments[f"{FULLNAME}-tool-runner"])["securityContext"]
    assert runner["seccompProfile"] == {"type": "Unconfined"} and runner["procMount"] == "Unmasked", runner
    assert runner["allowPrivilegeEscalation"] is False and runner["capabilities"] == {"drop": ["ALL"]}, runner
    assert "hostUsers" not in deployments[f"{FULLNAME}-tool-runner"]["spec"]["template"]["spec"]
    for name, deployment in deployments.items():
        if name != f"{FULLNAME}-tool-runner":
            assert "seccompProfile" not in container(deployment)["securityContext"], name

    password = base64.b64decode(by_kind(objs, "Secret")[f"{FULLNAME}-postgres"]["data"]["password"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{24}", password), "the password must need no URL escaping"

    nats = statefulsets[f"{FULLNAME}-nats"]
    c = container(nats)
    assert c["image"] == "nats:2.10-alpine", c["image"]
    assert c["args"] == ["-js", "-sd", "/data", "-m", "8222"], c["args"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/data"}
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert nats["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    ports = {p["name"]: p["port"] for p in by_kind(objs, "Service")[f"{FULLNAME}-nats"]["spec"]["ports"]}
    assert ports == {"client": 4222, "monitor": 8222}, ports

    postgres = statefulsets[f"{FULLNAME}-postgres"]
    c = container(postgres)
    assert c["image"] == "postgres:16-alpine", c["image"]
    assert c["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    pgdata = env_value(postgres, "PGDATA")["value"]
    assert any(pgdata.startswith(m["mountPath"] + "/") and m["name"] == "data" for m in c["volumeMounts"]), pgdata
    assert env_value(postgres, "POSTGRES_DB")["value"] == "turbo"
    assert env_value(postgres, "POSTGRES_USER")["value"] == "turbo"
    assert "storageClassName" not in postgres["spec"]["volumeClaimTemplates"][0]["spec"]

    text = notes(manifests)
    if text is not None:  # helm template leaves NOTES.txt out
        for needle in [
            f"svc/{FULLNAME}-orchestrator",
            "turbo.tasks.v1.TaskService/ListTasks",
            f"svc/{FULLNAME}-nats 4222:4222",
            "nats sub 'turbo.events.task.>'",
            "nats req turbo.ctl.tasks.list '{}'",
        ]:
            assert needle in text, f"NOTES.txt lacks {needle!r}"


def test_bundled_services_disabled():
    manifests = render({"nats": {"enabled": False}, "postgres": {"enabled": False}})
    objs = objects(manifests)
    assert not by_kind(objs, "StatefulSet") and set(by_kind(objs, "Secret")) == {f"{FULLNAME}-gateway"}
    assert set(by_kind(objs, "Deployment")) == TURBO_DEPLOYMENTS
    assert set(by_kind(objs, "Service")) == TURBO_DEPLOYMENTS
    check_services_select_pods(objs)
    for name, deployment in by_kind(objs, "Deployment").items():
        assert [e["name"] for e in env_of(deployment)] == [
            "TURBO_CODER_CONFIG",
            "TURBO_CODER__CLUSTER__TOOL_RUNNER_URL",
            "TURBO_CODER__KNOWLEDGE__URL",
            "TURBO_CODER__GATEWAY__JWT_SECRET",
            "TURBO_CODER__GATEWAY__ORCHESTRATOR_URL",
        ], name
        assert env_value(deployment, "TURBO_CODER__CLUSTER__TOOL_RUNNER_URL")["value"] == TOOL_RUNNER_URL, name
        assert env_value(deployment, "TURBO_CODER__KNOWLEDGE__URL")["value"] == KNOWLEDGE_URL, name
    text = notes(manifests)
    if text is not None:
        assert "WARNING: orchestrator.replicas is 2" in text
        assert "svc/" + FULLNAME + "-nats" not in text


def test_env_replaces_the_bundled_settings():
    own = [
        {"name": "TURBO_CODER__STORE__URL", "valueFrom": {"secretKeyRef": {"name": "mine", "key": "url"}}},
        {"name": "OLLAMA_API_KEY", "value": "k"},
    ]
    objs = objects(render({"env": own, "agentWorker": {"roles": ["coder", {"name": "tester", "replicas": 3}]}}))
    deployments = by_kind(objs, "Deployment")
    assert deployments[f"{FULLNAME}-agent-worker-tester"]["spec"]["replicas"] == 3
    assert f"{FULLNAME}-agent-worker-planner" not in deployments
    for name, deployment in deployments.items():
        assert env_value(deployment, "TURBO_CODER__STORE__URL") == own[0], name
        assert env_value(deployment, "TURBO_PG_PASSWORD") is None, name
        assert env_value(deployment, "TURBO_CODER__CLUSTER__NATS_URL")["value"] == NATS_URL, name
        assert env_value(deployment, "TURBO_CODER__CLUSTER__TOOL_RUNNER_URL")["value"] == TOOL_RUNNER_URL, name


def test_storage_class():
    objs = objects(render({"nats": {"persistence": {"storageClass": "fast", "size": "1Gi"}}}))
    spec = by_kind(objs, "StatefulSet")[f"{FULLNAME}-nats"]["spec"]["volumeClaimTemplates"][0]["spec"]
    assert spec["storageClassName"] == "fast" and spec["resources"]["requests"]["storage"] == "1Gi", spec


def test_tool_runner_with_user_namespaces():
    objs = objects(render({"toolRunner": {"hostUsers": False}}))
    spec = by_kind(objs, "Deployment")[f"{FULLNAME}-tool-runner"]["spec"]["template"]["spec"]
    assert spec["hostUsers"] is False, spec


def test_gateway_gets_its_token_key_and_the_orchestrator():
    objs = objects(render())
    secret = by_kind(objs, "Secret")[f"{FULLNAME}-gateway"]
    assert len(secret["data"]["jwt-secret"]) >= 64, secret
    gateway = by_kind(objs, "Deployment")[f"{FULLNAME}-gateway"]
    ref = env_value(gateway, "TURBO_CODER__GATEWAY__JWT_SECRET")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{FULLNAME}-gateway", "key": "jwt-secret"}, ref
    url = env_value(gateway, "TURBO_CODER__GATEWAY__ORCHESTRATOR_URL")["value"]
    assert url == f"http://{FULLNAME}-orchestrator:50051", url
    own = objects(render({"gateway": {"jwtSecretName": "mine"}}))
    assert f"{FULLNAME}-gateway" not in by_kind(own, "Secret")
    gateway = by_kind(own, "Deployment")[f"{FULLNAME}-gateway"]
    assert env_value(gateway, "TURBO_CODER__GATEWAY__JWT_SECRET")["valueFrom"]["secretKeyRef"]["name"] == "mine"
    names = [e["name"] for e in env_of(gateway)]
    assert "TURBO_CODER__GATEWAY__JWKS_URL" not in names, names
    idp = objects(render({"gateway": {"jwksUrl": "https://idp.example/.well-known/jwks.json"}}))
    gateway = by_kind(idp, "Deployment")[f"{FULLNAME}-gateway"]
    assert env_value(gateway, "TURBO_CODER__GATEWAY__JWT_ALGORITHM")["value"] == "RS256"
    assert env_value(gateway, "TURBO_CODER__GATEWAY__JWKS_URL")["value"] == "https://idp.example/.well-known/jwks.json"


def test_only_the_release_reaches_its_internal_services():
    objs = objects(render())
    policies = by_kind(objs, "NetworkPolicy")
    assert sorted(policies) == sorted(f"{FULLNAME}-{c}" for c in ["orchestrator", "tool-runner", "knowledge"]), policies
    orchestrator = policies[f"{FULLNAME}-orchestrator"]["spec"]
    assert orchestrator["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "orchestrator"
    allowed = orchestrator["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed["app.kubernetes.io/instance"] == RELEASE and "app.kubernetes.io/component" not in allowed, allowed
    assert f"{FULLNAME}-gateway" not in policies, "the gateway is the public door"
    assert not by_kind(objects(render({"networkPolicy": {"enabled": False}})), "NetworkPolicy")


def test_tool_runners_behind_the_job_queue():
    objs = objects(render({"toolRunner": {"route": "queue", "replicas": 3}}))
    deployments = by_kind(objs, "Deployment")
    assert deployments[f"{FULLNAME}-tool-runner"]["spec"]["replicas"] == 3
    for name, deployment in deployments.items():
        if name.endswith("-tool-runner"):
            continue
        assert env_value(deployment, "TURBO_CODER__CLUSTER__TOOL_RUNNER")["value"] == "queue", name
        names = [e["name"] for e in env_of(deployment)]
        assert "TURBO_CODER__CLUSTER__TOOL_RUNNER_URL" not in names, name


def test_postgres_user_must_be_url_safe():
    try:
        render({"postgres": {"user": "a@b"}})
    except RenderError as e:
        assert "postgres.user" in str(e), str(e)
    else:
        raise AssertionError("postgres.user 'a@b' rendered")


TESTS = [
    test_default_values,
    test_bundled_services_disabled,
    test_env_replaces_the_bundled_settings,
    test_storage_class,
    test_tool_runner_with_user_namespaces,
    test_tool_runners_behind_the_job_queue,
    test_only_the_release_reaches_its_internal_services,
    test_gateway_gets_its_token_key_and_the_orchestrator,
    test_postgres_user_must_be_url_safe,
]

if "pytest" in sys.modules and skip_reason():
    import pytest

    pytest.skip(skip_reason(), allow_module_level=True)


def main():
    reason = skip_reason()
    if reason and "--require" in sys.argv[1:]:
        print(f"test_helm: cannot run: {reason}; `make setup` installs it", file=sys.stderr)
        return 1
    if reason:
        print(f"test_helm: skipped: {reason}")
        return 0
    renderer = f"helm-python-sdk {helm_python.__version__}" if helm_python else HELM_BIN
    print(f"test_helm: rendering {CHART.relative_to(REPO)} with {renderer}")
    failed = 0
    for test in TESTS:
        try:
            test()
            print(f"ok   {test.__name__}")
        except Exception as e:  # a failed check or a render that should have worked
            failed += 1
            print(f"FAIL {test.__name__}: {type(e).__name__}: {e}")
    print(f"{len(TESTS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
