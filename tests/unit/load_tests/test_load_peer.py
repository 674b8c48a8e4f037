"""The LiteLLM peer of the bench without installing it: config, environment, the cached
virtualenv, the skip path when it cannot be installed or started, and the side-by-side
table in BENCHMARKS.md."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from engine.fake import FakeEngineState, create_fake_engine
from load_tests import peer_litellm
from load_tests.bench_figures import cpu_per_request, peer_section, proxy_figures
from load_tests.bench_run import BenchRun
from load_tests.benchmarks_md import figures_table, proxies_table, render_section
from load_tests.peer_litellm import (
    LITELLM_VERSION,
    MARKER,
    MASTER_KEY,
    PeerUnavailable,
    ensure_venv,
    litellm_config,
    litellm_peer,
    peer_argv,
    peer_env,
    peer_venv,
)
from load_tests.report import ReportPaths
from load_tests.runner import drop_arms, run_scenario_file
from load_tests.scenario import REQUEST_TYPES, ScenarioError, load_scenario, parse_scenario
from tests.support import ThreadServer

ENGINE_NAMES = {t: f"{t}-adapter-1" for t in REQUEST_TYPES}


# --- config and environment ----------------------------------------------------------------


def test_config_serves_each_request_type_as_an_openai_model_at_the_fakes_v1() -> None:
    config = litellm_config(ENGINE_NAMES, api_base="http://127.0.0.1:9001")
    entries = {e["model_name"]: e["litellm_params"] for e in config["model_list"]}
    assert set(entries) == set(REQUEST_TYPES)
    assert entries["invoice-parsing"] == {
        "model": "openai/invoice-parsing-adapter-1",
        "api_base": "http://127.0.0.1:9001/v1",
        "api_key": peer_litellm.UPSTREAM_KEY,
    }
    assert config["general_settings"] == {"master_key": MASTER_KEY}
    assert MASTER_KEY.startswith("sk-")  # LiteLLM refuses master keys without the prefix
    # No database: nothing in the config names one, and the YAML round-trips.
    text = yaml.safe_dump(config)
    assert "database" not in text.lower()
    assert yaml.safe_load(text) == config
    again = litellm_config({"a": "b"}, api_base="http://h:1/v1/")["model_list"][0]
    assert again["litellm_params"]["api_base"] == "http://h:1/v1"


def test_env_drops_database_and_litellm_settings_and_reads_the_local_cost_map() -> None:
    env = peer_env(
        {
            "PATH": "/usr/bin",
            "HOME": "/root",
            "DATABASE_URL": "postgresql://x",
            "LITELLM_MASTER_KEY": "sk-other",
            "LORA_GATEWAY_BACKENDS": "http://x",
            "REDIS_HOST": "r",
            "STORE_MODEL_IN_DB": "True",
        }
    )
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONUNBUFFERED": "1",
    }


def test_argv_one_worker_on_loopback(tmp_path: Path) -> None:
    venv = peer_venv("1.2.3", root=tmp_path)
    argv = peer_argv(venv, tmp_path / "c.yaml", 4000)
    assert argv[0] == str(tmp_path / "litellm-1.2.3" / "bin" / "litellm")
    assert argv[1:] == [
        "--config",
        str(tmp_path / "c.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        "4000",
        "--num_workers",
        "1",
    ]


def test_peers_root_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    venv = peer_venv()
    assert venv.path == tmp_path / "lora-gateway" / "peers" / f"litellm-{LITELLM_VERSION}"
    assert venv.requirement == f"litellm[proxy]=={LITELLM_VERSION}"


# --- the virtualenv: reuse, install, failure ----------------------------------------------


def _fake_install(venv_path: Path, *, fail_at: int | None = None, message: str = "") -> Any:
    """A stand-in for the two install steps (venv, pip) that makes the files they would."""
    calls: list[list[str]] = []

    def run(argv: list[str], log: Path, on_line: Any, *, bound_s: float) -> int:
        calls.append(argv)
        with log.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n")
            if fail_at == len(calls):
                f.write("Collecting litellm[proxy]\n" + message + "\n")
                return 1
        if len(calls) == 1:
            (venv_path / "bin").mkdir(parents=True)
            (venv_path / "bin" / "python").write_text("")
        else:
            (venv_path / "bin" / "litellm").write_text("")
        on_line("Successfully installed litellm")
        return 0

    return run, calls


def test_install_creates_the_venv_once_then_reuses_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    venv_path = tmp_path / "litellm-9.9.9"
    run, calls = _fake_install(venv_path)
    monkeypatch.setattr(peer_litellm, "_run_logged", run)
    said: list[str] = []
    venv = ensure_venv("9.9.9", root=tmp_path, say=said.append, live=True)
    assert venv.ready and (venv_path / MARKER).read_text() == "litellm[proxy]==9.9.9\n"
    assert calls[0][1:] == ["-m", "venv", str(venv_path)]
    assert calls[1][-1] == "litellm[proxy]==9.9.9" and calls[1][1:4] == ["-m", "pip", "install"]
    assert said[-1].endswith("installed in " + str(venv_path))
    ensure_venv("9.9.9", root=tmp_path, say=said.append, live=False)
    assert len(calls) == 2 and said[-1].endswith("(reused)")


def test_a_half_made_venv_is_removed_and_built_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    venv_path = tmp_path / "litellm-9.9.9"
    (venv_path / "bin").mkdir(parents=True)
    (venv_path / "bin" / "litellm").write_text("")  # no marker: an interrupted install
    (venv_path / "leftover").write_text("")
    run, calls = _fake_install(venv_path)
    monkeypatch.setattr(peer_litellm, "_run_logged", run)
    assert ensure_venv("9.9.9", root=tmp_path, say=lambda _m: None, live=False).ready
    assert len(calls) == 2 and not (venv_path / "leftover").exists()


def test_a_failed_pip_install_is_one_line_naming_pips_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run, _ = _fake_install(
        tmp_path / "litellm-9.9.9",
        fail_at=2,
        message="ERROR: No matching distribution found for litellm[proxy]==9.9.9",
    )
    monkeypatch.setattr(peer_litellm, "_run_logged", run)
    with pytest.raises(PeerUnavailable) as info:
        ensure_venv("9.9.9", root=tmp_path, say=lambda _m: None, live=False)
    reason = str(info.value)
    assert "\n" not in reason
    assert reason.startswith("pip install litellm[proxy]==9.9.9 failed (ERROR: No matching")
    assert str(tmp_path / "litellm-9.9.9.install.log") in reason
    assert not peer_venv("9.9.9", root=tmp_path).ready


def test_a_missing_interpreter_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(PeerUnavailable, match="creating the virtualenv failed"):
        ensure_venv("9.9.9", root=tmp_path, python=str(tmp_path / "no-python"), live=False)


def test_a_stalled_step_is_killed_at_its_bound(tmp_path: Path) -> None:
    log = tmp_path / "install.log"
    lines: list[str] = []
    argv = [
        sys.executable,
        "-c",
        "print('Collecting litellm', flush=True); import time; time.sleep(30)",
    ]
    code = peer_litellm._run_logged(argv, log, lines.append, bound_s=1.0)
    assert code < 0 and lines == ["Collecting litellm"]
    assert log.read_text().endswith("killed after 1 s\n")


async def test_bench_skips_the_peer_when_it_cannot_be_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run, _ = _fake_install(tmp_path / "litellm-9.9.9", fail_at=1, message="Error: no ensurepip")
    monkeypatch.setattr(peer_litellm, "_run_logged", run)
    said: list[str] = []
    bench = BenchRun(tmp_path / "out", quick=True, say=said.append, live=False)
    bench.peer_version, bench.peer_root = "9.9.9", tmp_path
    bench.prepare_peer()  # does not raise
    assert bench.peer_venv is None
    assert bench.peer_skipped and bench.peer_skipped.startswith("creating the virtualenv failed")
    assert any("LiteLLM peer skipped" in m for m in said)
    off = BenchRun(tmp_path / "out", quick=True, say=said.append, live=False, peer=False)
    off.prepare_peer()
    assert off.peer_skipped == "not requested (--no-peer)"
    # The peer's own scenario is then left out, and says why, without running anything.
    stack: Any = SimpleNamespace(upstream="fake", pids={})
    await off._scenario("overhead-fake-peer", stack)
    outcome = off.outcomes["overhead-fake-peer"]
    assert outcome.report is None and outcome.error is None
    assert outcome.extra == {"skipped_arms": {"litellm": "not requested (--no-peer)"}}


def test_a_proxy_that_dies_at_start_is_unavailable(tmp_path: Path) -> None:
    venv = peer_venv("9.9.9", root=tmp_path)
    venv.executable.parent.mkdir(parents=True)
    venv.executable.write_text(
        "#!/bin/sh\necho 'ImportError: no module named litellm' >&2\nexit 3\n"
    )
    venv.executable.chmod(venv.executable.stat().st_mode | stat.S_IXUSR)
    with (
        pytest.raises(PeerUnavailable, match="did not start: litellm proxy exited with code 3"),
        litellm_peer(
            venv,
            models=ENGINE_NAMES,
            upstream_url="http://127.0.0.1:9",
            work_dir=tmp_path / "work",
            say=lambda _m: None,
            bound_s=20,
        ),
    ):
        pass
    written = yaml.safe_load((tmp_path / "work" / "litellm.yaml").read_text())
    assert len(written["model_list"]) == 3


# --- scenarios: the optional peer arm -------------------------------------------------------


def test_concurrency_fake_has_an_optional_litellm_arm() -> None:
    sc = load_scenario("concurrency-fake")
    assert [a.name for a in sc.arms] == ["direct", "gateway", "litellm"]
    peer = sc.arm("litellm")
    assert peer.target == "peer" and peer.optional and peer.response_format == "schema"
    assert peer.mix == sc.arm("gateway").mix and not peer.model_map


def test_each_proxy_has_its_own_sequential_scenario_with_the_same_requests() -> None:
    gateway, peer = load_scenario("overhead-fake"), load_scenario("overhead-fake-peer")
    assert [a.name for a in gateway.arms] == ["direct", "gateway"]
    assert [a.name for a in peer.arms] == ["direct", "litellm"]
    litellm = peer.arm("litellm")
    assert litellm.target == "peer" and not litellm.optional  # the scenario is for it
    assert litellm.mix == gateway.arm("gateway").mix and litellm.response_format == "schema"
    assert peer.arm("direct") == gateway.arm("direct")
    same = ("schedule", "load", "prompts", "seed")
    assert [getattr(peer, k) for k in same] == [getattr(gateway, k) for k in same]


def test_drop_arms_skips_named_and_targetless_optional_arms() -> None:
    sc = load_scenario("concurrency-fake")
    kept, skipped = drop_arms(sc, {}, given={"gateway", "direct"})
    assert [a.name for a in kept.arms] == ["direct", "gateway"]
    assert skipped == {"litellm": "no --peer-url given"}
    kept, skipped = drop_arms(sc, {"litellm": "pip failed"}, given={"gateway", "direct", "peer"})
    assert skipped == {"litellm": "pip failed"} and len(kept.arms) == 2
    assert drop_arms(sc, {}, given={"gateway", "direct", "peer"}) == (sc, {})
    with pytest.raises(ScenarioError, match="baseline arm 'direct' cannot be skipped"):
        drop_arms(sc, {"direct": "no"}, given={"gateway", "direct", "peer"})
    only = parse_scenario(
        {
            "name": "x",
            "load": {"concurrency": 1, "duration_s": 1},
            "arms": [{"name": "p", "target": "peer", "optional": True, "mix": {"a": 1}}],
        }
    )
    with pytest.raises(ScenarioError, match="every arm was skipped"):
        drop_arms(only, {}, given=set())


async def test_a_skipped_arm_is_in_the_report_and_its_summary(tmp_path: Path) -> None:
    from tests.unit.load_tests.test_load_run import PROMPTS

    state = FakeEngineState(record_requests=False, extra_models=set(REQUEST_TYPES))
    with ThreadServer(create_fake_engine(state)) as server:
        paths = await run_scenario_file(
            "concurrency-fake",
            tmp_path / "out",
            gateway_url=server.url,
            gateway_key="k",
            direct_url=server.url,
            skip_arms={"litellm": "pip install failed"},
            model_maps={"direct": {t: t for t in REQUEST_TYPES}},
            overrides=["rounds=1", "load.duration_s=0.3", "load.warmup_s=0"],
            prompts=PROMPTS,
            live=False,
            plots=False,
        )
    report = json.loads(paths.json.read_text())
    assert set(report["arms"]) == {"direct", "gateway"}
    assert report["skipped_arms"] == {"litellm": "pip install failed"}
    assert "## Arm `litellm`: skipped: pip install failed" in paths.markdown.read_text()


# --- figures and BENCHMARKS.md --------------------------------------------------------------


def _arm(target: str, *, p50: float, p99: float, rps: float, errors: int = 0) -> dict[str, Any]:
    lat = {"p50": p50, "p90": p99, "p99": p99, "max": p99}
    none = {"p50": None, "p90": None, "p99": None, "max": None}
    total = {
        "requests": 100,
        "errors": errors,
        "errors_by_type": {},
        "rps": rps,
        "output_tokens_per_s": rps * 32,
        "latency_s": lat,
        "ttft_s": none,
        "itl_s": none,
    }
    return {"target": target, "total": total, "by_request_type": {}}


REPORTS = {
    "overhead-fake": {
        "arms": {
            "direct": _arm("direct", p50=0.0007, p99=0.0016, rps=300),
            "gateway": _arm("gateway", p50=0.0016, p99=0.0040, rps=300),
        },
        "bench_cpu": {"gateway_ms_per_request": 0.9, "upstream_ms_per_request": 0.15},
    },
    # The peer's own sequential scenario: its added latency is over this direct arm.
    "overhead-fake-peer": {
        "arms": {
            "direct": _arm("direct", p50=0.0008, p99=0.0017, rps=60),
            "litellm": _arm("peer", p50=0.0091, p99=0.0201, rps=60),
        },
        "bench_cpu": {"peer_ms_per_request": 6.5, "upstream_ms_per_request": 0.4},
    },
    "concurrency-fake": {
        "arms": {
            "direct": _arm("direct", p50=0.01, p99=0.014, rps=3000),
            "gateway": _arm("gateway", p50=0.03, p99=0.15, rps=900),
            "litellm": _arm("peer", p50=0.2, p99=0.4, rps=150, errors=2),
        },
        "bench_cpu": {"gateway_ms_per_request": 1.0, "peer_ms_per_request": 7.0},
    },
}


def test_cpu_per_request_counts_the_peer_by_its_own_requests(tmp_path: Path) -> None:
    lines = [{"target": "gateway"}] * 2 + [{"target": "peer"}] * 4 + [{"target": "direct"}] * 2
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(r) + "\n" for r in lines))
    paths = ReportPaths(tmp_path, tmp_path / "r.json", tmp_path / "s.md", requests)
    cpu = cpu_per_request(paths, {"gateway": 0.002, "peer": 0.02, "upstream": 0.004})
    assert cpu["gateway_ms_per_request"] == pytest.approx(1.0)
    assert cpu["peer_ms_per_request"] == pytest.approx(5.0)
    assert cpu["upstream_ms_per_request"] == pytest.approx(0.5)


def test_proxy_figures_side_by_side_against_direct() -> None:
    rows = {
        r["arm"]: r
        for r in proxy_figures(
            REPORTS,
            arms={"gateway": "gateway", "litellm": "peer"},
            sequential={"litellm": "overhead-fake-peer"},
        )
    }
    assert list(rows) == ["gateway", "litellm", "direct"]
    gw, peer = rows["gateway"], rows["litellm"]
    assert gw["added_p50_ms"] == pytest.approx(0.9) and gw["added_p99_ms"] == pytest.approx(2.4)
    assert peer["added_p50_ms"] == pytest.approx(8.3) and peer["added_p99_ms"] == pytest.approx(
        18.4
    )
    assert (gw["cpu_ms_per_request"], peer["cpu_ms_per_request"]) == (0.9, 6.5)
    assert (gw["cpu_ms_per_request_32"], peer["cpu_ms_per_request_32"]) == (1.0, 7.0)
    assert peer["rps_vs_direct"] == pytest.approx(0.05) and peer["errors"] == 2
    assert rows["direct"]["cpu_ms_per_request"] == 0.15 and rows["direct"]["rps"] == 3000


def test_proxies_table_shows_versions_figures_and_a_skipped_peer() -> None:
    section = peer_section(REPORTS, version="1.108.7", venv="/c/litellm-1.108.7", skipped=None)
    lines = proxies_table(section["proxies"], section["peer"])
    assert len({line.count("|") for line in lines}) == 1  # every row has every column
    gateway, litellm, direct = lines[2:]
    assert gateway.startswith("| gateway | lora-gateway (this repository) | 0.90 | 2.40 | 0.90 |")
    assert "| 900 (0.300 ×) | 1.00 | 0 |" in gateway
    assert litellm.startswith(
        "| litellm | LiteLLM proxy 1.108.7 (`litellm[proxy]==1.108.7`) | 8.30 | 18.40 | 6.50 |"
    )
    assert "| 150 (0.050 ×) | 7.00 | 2 |" in litellm
    assert (
        direct.startswith("| direct | none: straight to the fake engine") and "| 0.15 |" in direct
    )

    skipped = peer_section(REPORTS, version="1.108.7", venv=None, skipped="pip failed (ERROR: x)")
    row = proxies_table(skipped["proxies"], skipped["peer"])[3]
    assert (
        row.startswith("| litellm | LiteLLM proxy 1.108.7")
        and "skipped: pip failed (ERROR: x)" in row
    )
    assert row.count("|") == lines[0].count("|")


def test_render_section_records_the_peer_version_and_skipped_arms() -> None:
    summary = {
        "command": "lora-gateway loadtest bench --out bench --scenario overhead-fake",
        "started_at": "2026-12-02T10:00:00+00:00",
        "duration_s": 120.0,
        "machine": {},
        "cpu_share": {},
        "goals": [],
        "scenarios": {
            "overhead-fake": {
                "stack": "fake",
                "overrides": [],
                "arms": {},
                "extra": {"skipped_arms": {"litellm": "pip failed"}},
            }
        },
        **peer_section(REPORTS, version="1.108.7", venv="/c/litellm-1.108.7", skipped=None),
    }
    text = render_section(summary)
    assert "### Proxies side by side" in text
    assert "LiteLLM proxy **1.108.7** (`litellm[proxy]==1.108.7` from PyPI in its own" in text
    header, rule, row = figures_table(summary["scenarios"])
    assert row.startswith("| overhead-fake | fake | litellm: skipped: pip failed |")
    assert row.count("|") == header.count("|") == rule.count("|")
    assert "### Proxies" not in render_section({**summary, "proxies": []})
