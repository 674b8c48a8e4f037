"""deploy/compose: the Compose file, nginx, Prometheus and Grafana provisioning agree with
the code (settings, routes, metrics paths) and with each other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.deploy.deploy_helpers import (
    COMPOSE_FILE,
    DEPLOY,
    RULES_FILE,
    TOOLS_DIR,
    app_paths,
    compose,
    engine_flags,
    env_example,
    interpolate,
    require,
    settings_env,
    settings_from_env,
    vllm_metrics,
)

COMPOSE_DIR = COMPOSE_FILE.parent


def services() -> dict[str, Any]:
    return compose()["services"]


def gateway_services() -> dict[str, Any]:
    return {
        name: s
        for name, s in services().items()
        if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def engine_services() -> dict[str, Any]:
    return {n: s for n, s in services().items() if s.get("entrypoint") == ["vllm", "serve"]}


def gateway_env(name: str) -> dict[str, str]:
    env = {k: str(v) for k, v in gateway_services()[name]["environment"].items()}
    return {k: interpolate(v, env_example()) for k, v in env.items()}


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """container path -> (source, mode) of a service's volumes (short syntax)."""
    out: dict[str, tuple[str, str]] = {}
    for v in service.get("volumes", []):
        parts = v.split(":")
        out[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "rw")
    return out


def published(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def internal_networks() -> set[str]:
    return {n for n, cfg in compose()["networks"].items() if (cfg or {}).get("internal")}


# ---------------------------------------------------------------- the file itself


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema_file = TOOLS_DIR / "compose_spec.json"
    require(schema_file.is_file(), f"{schema_file} missing (scripts/deploy-tools.sh)")
    import jsonschema

    schema = json.loads(schema_file.read_text())
    # The file names draft 2019-09 (as '.../schema#', which jsonschema does not look up).
    assert "2019-09" in schema["$schema"]
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])
    # And the validator does catch a misspelt key.
    broken = json.loads(json.dumps(compose()))
    broken["services"]["vllm"]["helthcheck"] = broken["services"]["vllm"].pop("healthcheck")
    assert list(validator.iter_errors(broken))


def test_every_required_variable_is_in_env_example_and_interpolation_refuses_missing() -> None:
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required <= set(env_example()), required - set(env_example())
    with pytest.raises(KeyError):
        interpolate("${NOT_SET:?set it}", {})
    assert interpolate("${X:-d}", {}) == "d"


def test_bind_mounted_files_exist() -> None:
    for name, svc in services().items():
        for _, (src, _) in mounts(svc).items():
            if src.startswith("."):
                assert (COMPOSE_DIR / src).exists(), f"{name}: {src} does not exist"


# ---------------------------------------------------------------- gateway replicas


def test_two_gateway_replicas_with_settings_the_code_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert len(gateway_services()) >= 2
    for name in gateway_services():
        env = gateway_env(name)
        unknown = {k for k in env if k.startswith("LORA_GATEWAY_")} - set(settings_env())
        assert not unknown, f"{name}: not settings: {unknown}"
        s = settings_from_env(monkeypatch, env)
        assert s.host == "0.0.0.0"
        assert not s.demo and not s.auth_disabled and s.api_keys
        assert make_url(s.database_url).drivername == "postgresql+psycopg"


def test_settings_check_refuses_an_unknown_or_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    env = gateway_env(next(iter(gateway_services())))
    env["LORA_GATEWAY_API_KEYS"] = '[{"id": "x", "key_hash": "md5:00"}]'
    with pytest.raises(ValidationError):
        settings_from_env(monkeypatch, env)


def test_gateways_share_one_catalogue_and_one_store_with_the_engine() -> None:
    envs = [gateway_env(n) for n in gateway_services()]
    assert len({e["LORA_GATEWAY_DATABASE_URL"] for e in envs}) == 1
    url = make_url(envs[0]["LORA_GATEWAY_DATABASE_URL"])
    assert url.host
    pg = services()[url.host]
    assert str(url.port) == "5432" and "postgres" in pg["image"]
    assert pg["environment"]["POSTGRES_USER"] == url.username
    assert pg["environment"]["POSTGRES_DB"] == url.database
    store = {e["LORA_GATEWAY_STORE"] for e in envs}
    assert len(store) == 1
    (path,) = store
    vols = {mounts(s)[path][0] for s in gateway_services().values()}
    assert len(vols) == 1 and not next(iter(vols)).startswith("."), "one named volume"
    for name, eng in engine_services().items():
        src, mode = mounts(eng)[path]  # same path in the engine: it loads what we hand it
        assert (src, mode) == (next(iter(vols)), "ro"), name


def test_gateway_backends_are_the_engines_and_engine_flags_match_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engines = engine_services()
    assert engines
    for name in gateway_services():
        s = settings_from_env(monkeypatch, gateway_env(name))
        assert len(s.backends) == len(engines)
        for url in s.backends:
            m = re.fullmatch(r"http://([\w-]+):(\d+)", url)
            assert m, url
            eng = engines[m.group(1)]
            _, flags = engine_flags(eng["command"])
            assert flags["port"] == m.group(2)
            assert flags["served-model-name"] == s.base_model
            assert int(flags["max-lora-rank"]) == s.max_lora_rank
            assert int(flags["max-loras"]) == s.max_loras


def test_gateway_stop_grace_is_the_shutdown_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, svc in gateway_services().items():
        s = settings_from_env(monkeypatch, gateway_env(name))
        grace = re.fullmatch(r"(\d+)s", svc["stop_grace_period"])
        assert grace and int(grace.group(1)) == s.termination_grace, name
        assert s.pre_stop_delay == 0, f"{name}: compose has no preStop hook"
        budget = s.shutdown_budget
        assert budget.drain + budget.final < s.termination_grace, name
        assert budget.total <= s.termination_grace and budget.margin >= 2, name


def test_route_table_is_mounted_where_settings_point_and_loads() -> None:
    from router.routes import RouteTable

    for name, svc in gateway_services().items():
        target = gateway_env(name)["LORA_GATEWAY_ROUTES_FILE"]
        src, mode = mounts(svc)[target]
        assert mode == "ro"
        table = RouteTable.load(COMPOSE_DIR / src)
        assert set(table.routes) == {
            "shipment-classification",
            "invoice-parsing",
            "route-optimization",
        }


# ---------------------------------------------------------------- the engine


def test_engine_is_vllm_on_a_gpu_with_runtime_lora_and_pinned_version() -> None:
    for name, eng in engine_services().items():
        image = interpolate(eng["image"], {})
        assert image == f"vllm/vllm-openai:v{vllm_metrics().version}", name
        positional, flags = engine_flags(eng["command"])
        assert positional == ["meta-llama/Meta-Llama-3-8B-Instruct"]
        assert flags["enable-lora"] is True
        assert int(flags["max-cpu-loras"]) >= int(flags["max-loras"])
        assert int(flags["max-lora-rank"]) in {8, 16, 32, 64}
        assert eng["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
        assert eng["environment"]["HF_HUB_OFFLINE"] == "1"
        (dev,) = eng["deploy"]["resources"]["reservations"]["devices"]
        assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
        hc = " ".join(eng["healthcheck"]["test"])
        assert f"127.0.0.1:{flags['port']}/health" in hc


def test_engine_database_and_gateways_are_never_published_or_on_an_open_network() -> None:
    internal = internal_networks()
    assert internal
    private = [*engine_services(), *gateway_services(), "postgres"]
    for name in private:
        svc = services()[name]
        assert not published(svc), f"{name} publishes {published(svc)}"
        assert set(svc["networks"]) <= internal, f"{name} is on {svc['networks']}"


def test_published_ports_bind_to_loopback_by_default() -> None:
    for name, svc in services().items():
        for p in published(svc):
            host = interpolate(p.rsplit(":", 2)[0], {})
            assert host == "127.0.0.1", f"{name}: {p}"


# ---------------------------------------------------------------- nginx in front


def nginx() -> str:
    return (COMPOSE_DIR / "nginx.conf").read_text()


def test_nginx_spreads_over_every_gateway_replica_with_streaming_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = nginx()
    upstream = set(re.findall(r"^\s*server\s+([\w-]+:\d+)", conf, re.M))
    expected = set()
    for name in gateway_services():
        s = settings_from_env(monkeypatch, gateway_env(name))
        expected.add(f"{name}:{s.port}")
    assert upstream == expected
    assert re.search(r"proxy_buffering\s+off;", conf)
    lb = next(s for s in services().values() if "nginx" in s["image"])
    listen = re.search(r"listen\s+(\d+);", conf)
    assert listen and any(p.endswith(f":{listen.group(1)}") for p in published(lb))


def _size(v: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(v[:-1]) * units[v[-1].lower()] if v[-1].isalpha() else int(v)


def test_nginx_limits_are_no_tighter_than_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_from_env(monkeypatch, gateway_env(next(iter(gateway_services()))))
    conf = nginx()
    body = re.search(r"client_max_body_size\s+(\w+);", conf)
    assert body and _size(body.group(1)) >= s.max_upload_bytes
    read = re.search(r"proxy_read_timeout\s+(\d+)s;", conf)
    assert read and int(read.group(1)) >= s.request_timeout
    assert _size("512m") == 512 * 1024**2


# ---------------------------------------------------------------- Prometheus and Grafana


def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())


def test_prometheus_scrapes_every_gateway_and_engine_on_real_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs = {j["job_name"]: j for j in prometheus_config()["scrape_configs"]}
    assert set(jobs) == {"lora-gateway", "vllm"}
    gw = jobs["lora-gateway"]
    assert gw["metrics_path"] in app_paths()
    targets = {t for sc in gw["static_configs"] for t in sc["targets"]}
    expected = set()
    for name in gateway_services():
        s = settings_from_env(monkeypatch, gateway_env(name))
        expected.add(f"{name}:{s.port}")
    assert targets == expected
    eng_targets = {t for sc in jobs["vllm"]["static_configs"] for t in sc["targets"]}
    assert eng_targets == {
        f"{n}:{engine_flags(e['command'])[1]['port']}" for n, e in engine_services().items()
    }
    assert jobs["vllm"]["metrics_path"] == "/metrics"  # vLLM's own endpoint


def test_prometheus_loads_the_rules_file_and_promtool_accepts_the_config(tmp_path: Path) -> None:
    prom = next(s for s in services().values() if s["image"].startswith("prom/prometheus"))
    rule_targets = [t for t, (src, _) in mounts(prom).items() if src.endswith("rules.yaml")]
    assert len(rule_targets) == 1
    target = Path(rule_targets[0])
    globs = prometheus_config()["rule_files"]
    assert any(target.match(g) for g in globs), (target, globs)
    assert (COMPOSE_DIR / mounts(prom)[str(target)][0]).resolve() == RULES_FILE.resolve()

    promtool = TOOLS_DIR / "promtool"
    require(promtool.is_file(), f"{promtool} missing (scripts/deploy-tools.sh)")
    import subprocess

    # promtool resolves rule_files and credential files on disk: point them at real files.
    cfg = prometheus_config()
    cfg["rule_files"] = [str(RULES_FILE)]
    token = tmp_path / "token"
    token.write_text("a-key\n")
    for job in cfg["scrape_configs"]:
        if "credentials_file" in job.get("authorization", {}):
            job["authorization"]["credentials_file"] = str(token)
    f = tmp_path / "prometheus.yml"
    f.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [str(promtool), "check", "config", str(f)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_scrapes_the_gateways_with_a_metrics_only_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs = {j["job_name"]: j for j in prometheus_config()["scrape_configs"]}
    auth = jobs["lora-gateway"]["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    path = Path(auth["credentials_file"])
    assert path.parent == Path("/run/secrets")  # where compose mounts a service's secrets
    prom = next(s for s in services().values() if s["image"].startswith("prom/prometheus"))
    assert path.name in prom["secrets"]
    source = compose()["secrets"][path.name]["file"]
    # The operator writes the key there; git must never pick it up.
    ignored = (COMPOSE_DIR / ".gitignore").read_text().split()
    assert Path(source).name in ignored and ".env" in ignored
    assert "authorization" not in jobs["vllm"]  # vLLM's /metrics takes no key
    for name in gateway_services():
        s = settings_from_env(monkeypatch, gateway_env(name))
        assert s.metrics_key_required, f"{name}: /metrics names routes and adapters"
        scrapers = [k for k in s.api_keys if "metrics" in k.scopes]
        assert scrapers and all(k.scopes == ["metrics"] for k in scrapers), name


def test_grafana_provisions_the_dashboard_and_the_prometheus_datasource() -> None:
    graf = next(s for s in services().values() if s["image"].startswith("grafana/"))
    m = mounts(graf)
    prov_dir = COMPOSE_DIR / m["/etc/grafana/provisioning"][0]
    provider = yaml.safe_load((prov_dir / "dashboards" / "lora-gateway.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    dash_mounts = [t for t, (src, _) in m.items() if src.endswith("lora-gateway.json")]
    assert len(dash_mounts) == 1 and Path(dash_mounts[0]).parent == Path(path)
    assert (COMPOSE_DIR / m[dash_mounts[0]][0]).resolve() == (
        DEPLOY / "grafana" / "lora-gateway.json"
    ).resolve()
    ds = yaml.safe_load((prov_dir / "datasources" / "prometheus.yaml").read_text())
    (src,) = ds["datasources"]
    host_port = re.fullmatch(r"http://([\w-]+):(\d+)", src["url"])
    assert host_port and host_port.group(1) in services()
    prom = services()[host_port.group(1)]
    assert prom["image"].startswith("prom/prometheus") and host_port.group(2) == "9090"
    # Grafana must share a network with Prometheus.
    assert set(graf["networks"]) & set(prom["networks"])
