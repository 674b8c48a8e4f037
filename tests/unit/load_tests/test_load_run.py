"""Whole runs against the fake engine (engine.fake) on 127.0.0.1; fail-fast pre-flight."""

from __future__ import annotations

import itertools
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from engine.fake import FakeEngineState, Faults, create_fake_engine
from load_tests.arrivals import poisson_arrivals
from load_tests.client import PlannedRequest
from load_tests.generator import RunResult, Target, run_scenario
from load_tests.preflight import PreflightError
from load_tests.prompts import PromptError, PromptSet, load_prompt_set, prompt_messages
from load_tests.scenario import REQUEST_TYPES, ScenarioError, parse_scenario
from load_tests.stats import sum_series
from tests.support import ThreadServer
from training import sources
from training.sources import SyntheticGenerator

SCHEMA = {
    "type": "object",
    "required": ["category"],
    "properties": {"category": {"type": "string"}},
}
PROMPTS = PromptSet(
    prompts={
        t: [
            [
                {"role": "system", "content": f"{t} system"},
                {"role": "user", "content": f"{t} question {i}"},
            ]
            for i in range(4)
        ]
        for t in REQUEST_TYPES
    },
    schemas={t: SCHEMA for t in REQUEST_TYPES},
)
ROUTES = set(REQUEST_TYPES)


ANSWER = '{"category": "general", "eta_bucket": "1-3d"}'


@asynccontextmanager
async def fake_server(**config: Any) -> AsyncIterator[tuple[FakeEngineState, str]]:
    """The project's fake engine on a loopback port, answering ANSWER unless told otherwise."""
    config.setdefault("answer_text", ANSWER)
    state = FakeEngineState(record_requests=False, **config)
    with ThreadServer(create_fake_engine(state)) as server:
        yield state, server.url


def scenario(arms: list[dict[str, Any]], **over: Any) -> Any:
    data: dict[str, Any] = {"name": "tiny", "load": {"rate": 40.0, "duration_s": 0.5}, "arms": arms}
    for k, v in over.items():
        if k == "load":
            data["load"] = {**data["load"], **v}
        else:
            data[k] = v
    data["load"] = {k: v for k, v in data["load"].items() if v is not None}
    return parse_scenario(data)


GATEWAY_ARM = {
    "name": "gateway",
    "target": "gateway",
    "mix": {"shipment-classification": 1, "invoice-parsing": 1},
}
DIRECT_ARM = {
    "name": "direct",
    "target": "direct",
    "mix": {"shipment-classification": 1, "invoice-parsing": 1},
    "model_map": {"shipment-classification": "eng", "invoice-parsing": "eng"},
}


async def test_open_loop_two_arms_interleaved_without_coordinated_omission() -> None:
    # The upstream takes 0.15 s per request, six times the mean arrival gap: a closed
    # loop would send far fewer; the open loop must send exactly what was scheduled.
    async with (
        fake_server(
            extra_models=ROUTES, faults=Faults(first_byte_delay=0.15), version_header=True
        ) as (gw, gw_url),
        fake_server(extra_models={"eng"}, faults=Faults(first_byte_delay=0.15)) as (_dr, dr_url),
    ):
        sc = scenario([DIRECT_ARM, GATEWAY_ARM], load={"warmup_s": 0.1}, seed=9)
        result = await run_scenario(
            sc,
            {"gateway": Target("gateway", gw_url), "direct": Target("direct", dr_url)},
            prompts=PROMPTS,
            settle_s=0.0,
        )
    scheduled = list(
        itertools.takewhile(
            lambda t: t < 0.6, poisson_arrivals(40.0, random.Random("9:arrivals:0"))
        )
    )
    assert len(result.records) == len(scheduled)
    assert [r.scheduled_s for r in result.records] == pytest.approx(
        [result.phases[0].start_s + t for t in scheduled], abs=1e-6
    )
    assert result.stopped_early is None
    assert all(r.ok and r.latency_s >= 0.15 and r.ttft_s is not None for r in result.records)
    assert gw.max_in_flight > 1  # requests overlapped
    by_arm = {arm: [r for r in result.records if r.arm == arm] for arm in ("gateway", "direct")}
    assert abs(len(by_arm["gateway"]) - len(by_arm["direct"])) <= 1  # round robin
    assert {r.model for r in by_arm["direct"]} == {"eng"}
    assert {r.model for r in by_arm["gateway"]} <= {"shipment-classification", "invoice-parsing"}
    assert all(r.schema_valid is True for r in result.records)
    assert {r.adapter_version for r in by_arm["gateway"]} <= {
        "shipment-classification@1",
        "invoice-parsing@1",
    }
    assert {r.adapter_version for r in by_arm["direct"]} == {None}
    assert [r.warmup for r in result.records] == [
        r.scheduled_s < 0.1 + 1e-9 for r in result.records
    ]
    # The counters the servers kept agree with what the client measured.
    gw_deltas = result.metrics["gateway"]["deltas"]
    assert sum_series(gw_deltas, "fake_requests_total") == len(by_arm["gateway"])
    assert gw_deltas["fake_completion_tokens_total"] == sum(
        r.completion_tokens or 0 for r in by_arm["gateway"]
    )
    assert result.models["direct"] == ["base", "eng"]
    assert result.server_versions == {"gateway": "fake-engine", "direct": "fake-engine"}


async def test_closed_loop_bounded_by_count_non_streaming_completions() -> None:
    arm = {
        "name": "only",
        "target": "gateway",
        "mix": {"route-optimization": 1},
        "endpoint": "completions",
        "stream": False,
    }
    async with fake_server(extra_models=ROUTES, faults=Faults(first_byte_delay=0.01)) as (
        fake,
        url,
    ):
        sc = scenario(
            [arm],
            load={
                "rate": None,
                "concurrency": 3,
                "duration_s": 30,
                "max_requests": 10,
                "warmup_requests": 2,
            },
        )
        result = await run_scenario(
            sc, {"gateway": Target("gateway", url)}, prompts=PROMPTS, settle_s=0.0
        )
    assert len(result.records) == 12
    assert sum(r.warmup for r in result.records) == 2
    assert fake.max_in_flight == 3
    assert all(r.ok and r.ttft_s is None and r.completion_tokens for r in result.records)
    assert result.phases[0].measured == 10
    assert result.phases[0].window_s > 0


async def test_alternating_phases_and_arm_windows() -> None:
    arms = [
        {"name": "single", "target": "gateway", "mix": {"shipment-classification": 1}},
        {"name": "mixed", "target": "gateway", "mix": {t: 1 for t in REQUEST_TYPES}},
    ]
    async with fake_server(extra_models=ROUTES) as (_, url):
        sc = scenario(
            arms,
            schedule="alternating",
            rounds=2,
            load={"rate": None, "concurrency": 2, "duration_s": 30, "max_requests": 3},
        )
        result = await run_scenario(
            sc, {"gateway": Target("gateway", url)}, prompts=PROMPTS, settle_s=0.0
        )
    assert [p.arms for p in result.phases] == [["single"], ["mixed"], ["single"], ["mixed"]]
    assert all(p.measured == 3 for p in result.phases)
    windows = result.arm_windows()
    assert windows["single"] == pytest.approx(result.phases[0].window_s + result.phases[2].window_s)
    assert {r.phase for r in result.records if r.arm == "mixed"} == {1, 3}


async def test_early_stop_when_the_error_rate_passes_the_threshold() -> None:
    async with fake_server(extra_models=ROUTES, faults=Faults(drop_after_chunks=1)) as (_, url):
        sc = scenario(
            [GATEWAY_ARM],
            load={"rate": 200.0, "duration_s": 10.0},
            stop={"max_error_rate": 0.5, "window": 10, "min_requests": 10},
        )
        result = await run_scenario(
            sc, {"gateway": Target("gateway", url)}, prompts=PROMPTS, settle_s=0.0
        )
    assert result.stopped_early is not None
    assert "stopped early: error rate 100% over the last 10 requests" in result.stopped_early
    assert len(result.records) < 200  # far fewer than 10 s at 200/s
    assert {r.error_type for r in result.records} == {"stream_incomplete"}


async def test_before_request_hook_runs_for_its_arm_only_and_failures_are_recorded() -> None:
    arms: list[dict[str, Any]] = [
        {"name": "warm", "target": "gateway", "mix": {"shipment-classification": 1}},
        {
            "name": "cold",
            "target": "gateway",
            "mix": {"shipment-classification": 1},
            "before_request": True,
        },
    ]
    seen: list[PlannedRequest] = []

    async def unload(plan: PlannedRequest) -> None:
        seen.append(plan)
        if len(seen) == 2:
            raise RuntimeError("unload refused")

    async with fake_server(extra_models=ROUTES) as (_, url):
        sc = scenario(
            arms, load={"rate": None, "concurrency": 1, "duration_s": 30, "max_requests": 6}
        )
        result = await run_scenario(
            sc,
            {"gateway": Target("gateway", url)},
            prompts=PROMPTS,
            before_request=unload,
            settle_s=0.0,
        )
        with pytest.raises(ScenarioError, match="arm 'cold' needs a before_request hook"):
            await run_scenario(sc, {"gateway": Target("gateway", url)}, prompts=PROMPTS)
    assert [r.arm for r in result.records] == ["warm", "cold"] * 3
    assert [p.arm for p in seen] == ["cold"] * 3
    cold = [r for r in result.records if r.arm == "cold"]
    assert [r.error_type for r in cold] == [None, "hook_error", None]
    assert "unload refused" in (cold[1].error or "")


async def test_request_timeout_is_recorded() -> None:
    async with fake_server(extra_models=ROUTES, faults=Faults(first_byte_delay=0.6)) as (_, url):
        sc = scenario(
            [GATEWAY_ARM],
            load={
                "rate": None,
                "concurrency": 1,
                "duration_s": 30,
                "max_requests": 1,
                "request_timeout_s": 0.15,
            },
        )
        result = await run_scenario(
            sc, {"gateway": Target("gateway", url)}, prompts=PROMPTS, settle_s=0.0
        )
    assert [r.error_type for r in result.records] == ["timeout"]
    assert result.records[0].status == 200  # headers came, the body did not


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _preflight_error(sc: Any, targets: dict[str, Target]) -> str:
    with pytest.raises(PreflightError) as exc:
        await run_scenario(sc, targets, prompts=PROMPTS, settle_s=0.0)
    message = str(exc.value)
    assert "\n" not in message
    return message


async def test_preflight_unreachable_target() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    message = await _preflight_error(scenario([GATEWAY_ARM]), {"gateway": Target("gateway", url)})
    assert message.startswith(f"gateway: {url} is unreachable")


async def test_preflight_wrong_key() -> None:
    async with fake_server(extra_models=ROUTES, api_key="right") as (fake, url):
        message = await _preflight_error(
            scenario([GATEWAY_ARM]), {"gateway": Target("gateway", url, "wrong")}
        )
        assert fake.max_in_flight == 0  # no completion was even attempted
    assert message == "gateway: the server rejected the API key (HTTP 401)"


@pytest.mark.parametrize("models_endpoint", [False, True])
async def test_preflight_unknown_request_type(models_endpoint: bool) -> None:
    arm = {"name": "gateway", "target": "gateway", "mix": {"no-such-route": 1}}
    async with fake_server(extra_models=ROUTES, models_endpoint=models_endpoint) as (fake, url):
        message = await _preflight_error(scenario([arm]), {"gateway": Target("gateway", url)})
        assert fake.served == 0  # only the 404 probe reached it
    assert message.startswith("gateway: unknown request type or model 'no-such-route' (HTTP 404")


async def test_preflight_missing_target_and_direct_binding() -> None:
    async with fake_server(extra_models=ROUTES) as (_, url):
        message = await _preflight_error(
            scenario([GATEWAY_ARM, DIRECT_ARM]), {"gateway": Target("gateway", url)}
        )
        assert message == "arm 'direct' targets 'direct', but no --direct-url given"
        unbound = {**DIRECT_ARM, "model_map": {}}
        with pytest.raises(ScenarioError, match="knows no request types"):
            await run_scenario(
                scenario([unbound]), {"direct": Target("direct", url)}, prompts=PROMPTS
            )


async def test_preflight_accepts_a_model_found_only_by_a_first_request() -> None:
    arm = {"name": "gateway", "target": "gateway", "mix": {"unlisted-adapter": 1}}
    async with fake_server(accept_any_model=True) as (_, url):
        sc = scenario(
            [arm], load={"rate": None, "concurrency": 1, "duration_s": 5, "max_requests": 2}
        )
        result: RunResult = await run_scenario(
            sc, {"gateway": Target("gateway", url)}, prompts=PROMPTS, settle_s=0.0
        )
    assert len(result.records) == 2 and all(r.ok for r in result.records)


def test_prompts_come_from_the_registered_sources_test_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, int, int, str]] = []

    def generate(task: str, n: int, *, seed: int, split: str) -> list[dict[str, Any]]:
        calls.append((task, n, seed, split))
        return [
            {
                "task": task,
                "answer": {},
                "messages": [
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": f"U{i}"},
                    {"role": "assistant", "content": "{}"},
                ],
            }
            for i in range(n)
        ]

    source = SyntheticGenerator(
        name="fake",
        generate=generate,
        schemas={"invoice-parsing": SCHEMA},
        working={"invoice-parsing": ("w",)},
    )
    monkeypatch.setattr(sources, "_SOURCES", {"fake": source})
    ps = load_prompt_set(["invoice_parsing"], pool_size=3, seed=42)
    assert calls == [("invoice-parsing", 3, 42, "test")]
    assert ps.pool("invoice_parsing")[2] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U2"},
    ]
    assert ps.schemas == {"invoice_parsing": SCHEMA}
    assert ps.working == {"invoice_parsing": ("w",)}
    unknown = r"no dataset source makes task 'route-optimization'; registered: fake"
    with pytest.raises(PromptError, match=unknown):
        load_prompt_set(["route-optimization"], pool_size=1, seed=1)
    with pytest.raises(PromptError, match="no system or user message"):
        prompt_messages({"messages": [{"role": "assistant", "content": "x"}]})


async def test_run_scenario_file_with_live_display_writes_the_report(tmp_path: Any) -> None:
    import json

    from load_tests.runner import run_scenario_file

    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\nload: {concurrency: 2, duration_s: 5, max_requests: 4}\n"
        "arms:\n  - {name: gateway, target: gateway, mix: {invoice-parsing: 1}}\n"
    )
    async with fake_server(extra_models=ROUTES) as (_, url):
        paths = await run_scenario_file(
            path,
            tmp_path / "out",
            gateway_url=url,
            gateway_key="k",
            prompts=PROMPTS,
            live=True,
            overrides=["load.max_requests=3"],
        )
    report = json.loads(paths.json.read_text())
    assert report["arms"]["gateway"]["total"]["requests"] == 3
    assert report["targets"]["gateway"]["models"][0] == "base"
    assert [p.name for p in paths.plots] == ["latency_cdf.png", "over_time.png", "ttft_hist.png"]


def test_live_progress_counts_and_current_p50() -> None:
    import io

    from rich.console import Console

    from load_tests.client import RequestRecord
    from load_tests.progress import LiveProgress

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with LiveProgress(total=3, console=console) as live:
        live.on_phase(0, ["a"])
        for i, (lat, status) in enumerate([(0.1, 200), (0.3, 200), (0.0, 500)]):
            plan = PlannedRequest(
                index=i,
                arm="a",
                phase=0,
                target="gateway",
                request_type="x",
                model="x",
                task="x",
                messages=[],
            )
            live.on_sent(plan)
            live.on_done(
                RequestRecord(
                    index=i,
                    arm="a",
                    phase=0,
                    target="gateway",
                    request_type="x",
                    model="x",
                    warmup=False,
                    stream=True,
                    scheduled_s=0.0,
                    latency_s=lat,
                    status=status,
                    error_type=None if status == 200 else "server_error",
                )
            )
    assert (live.sent, live.done, live.errors) == (3, 3, 1)
    assert live.current_p50_ms() == pytest.approx(200.0)
    assert "errors 1" in console.file.getvalue()  # type: ignore[attr-defined]


async def test_admin_unloader_calls_the_gateway_and_raises_on_refusal() -> None:
    from aiohttp import web

    from load_tests.runner import AdminUnloader

    calls: list[tuple[str, str | None]] = []

    async def unload(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        calls.append((name, request.headers.get("Authorization")))
        if name == "missing@1":
            return web.json_response({"error": {"message": "no such adapter"}}, status=404)
        return web.json_response({"unloaded": name})

    app = web.Application()
    app.router.add_post("/v1/adapters/{name}/unload", unload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    hook = AdminUnloader(url, "admin", adapters={"shipment-classification": "shipper@2"})
    plan = PlannedRequest(
        index=0,
        arm="cold",
        phase=0,
        target="gateway",
        request_type="shipment-classification",
        model="shipment-classification",
        task="x",
        messages=[],
    )
    try:
        await hook(plan)
        plan.model = "missing@1"
        with pytest.raises(RuntimeError, match="unload missing@1: HTTP 404"):
            await hook(plan)
    finally:
        await hook.aclose()
        await runner.cleanup()
    assert calls == [("shipper@2", "Bearer admin"), ("missing@1", "Bearer admin")]
    assert hook.calls == 1
