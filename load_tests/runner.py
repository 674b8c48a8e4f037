"""One call from a scenario file to a written report, and the gateway unload hook.

``run_scenario_file`` is what the CLI and ``make bench`` share: load and override the
scenario, bind run-time model names, run it with a live display, write the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import aiohttp

from load_tests.client import PlannedRequest
from load_tests.generator import BeforeRequest, Target, expected_requests, run_scenario
from load_tests.prompts import PromptSet
from load_tests.report import ReportPaths, write_report
from load_tests.scenario import Scenario, ScenarioError, bind_models, load_scenario


class AdminUnloader:
    """Owns an admin session to the gateway; unloads a request's adapter before it is sent.

    Use as a ``before_request`` hook for cold-start arms: ``POST
    /v1/adapters/{name}/unload`` with the admin key. ``adapters`` maps a request's
    model (request type) to the adapter name to unload; by default the model itself.
    """

    def __init__(
        self,
        gateway_url: str,
        admin_key: str,
        *,
        adapters: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.base_url = gateway_url.rstrip("/").removesuffix("/v1")
        self.adapters = dict(adapters or {})
        self._headers = {"Authorization": f"Bearer {admin_key}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0

    async def __call__(self, plan: PlannedRequest) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        name = self.adapters.get(plan.model, plan.model)
        url = f"{self.base_url}/v1/adapters/{quote(name, safe='@')}/unload"
        async with self._session.post(url) as resp:
            body = await resp.read()
            if resp.status >= 300:
                raise RuntimeError(
                    f"unload {name}: HTTP {resp.status} {body[:200].decode('utf-8', 'replace')}"
                )
        self.calls += 1

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def run_scenario_file(
    scenario: str | Path,
    out_dir: str | Path,
    *,
    gateway_url: str | None = None,
    gateway_key: str | None = None,
    direct_url: str | None = None,
    direct_key: str | None = None,
    peer_url: str | None = None,
    peer_key: str | None = None,
    metrics_key: str | None = None,
    skip_arms: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    model_maps: Mapping[str, Mapping[str, str]] | None = None,
    rotations: Mapping[str, Sequence[str]] | None = None,
    before_request: BeforeRequest | None = None,
    prompts: PromptSet | None = None,
    live: bool = True,
    plots: bool = True,
) -> ReportPaths:
    """Run one scenario (a shipped name or a path) and write its report into ``out_dir``.

    ``model_maps``/``rotations`` are keyed by arm name or by target (``"direct"``).
    ``metrics_key`` is sent to the gateway's /metrics (default: ``gateway_key``).
    ``skip_arms`` (arm name -> reason) leaves arms out; so does an ``optional`` arm whose
    target is not given. The report lists them as ``skipped: <reason>``.
    Raises ScenarioError / PreflightError (one line) before any load is sent.
    """
    sc = load_scenario(scenario, overrides=overrides)
    sc = bind_models(sc, model_maps=model_maps, rotations=rotations)
    targets: dict[str, Target] = {}
    if gateway_url:
        targets["gateway"] = Target("gateway", gateway_url, gateway_key, metrics_key)
    if direct_url:
        targets["direct"] = Target("direct", direct_url, direct_key)
    if peer_url:
        targets["peer"] = Target("peer", peer_url, peer_key)
    sc, skipped = drop_arms(sc, skip_arms or {}, given=set(targets))
    if live:
        from load_tests.progress import LiveProgress

        with LiveProgress(total=expected_requests(sc)) as progress:
            result = await run_scenario(
                sc, targets, prompts=prompts, before_request=before_request, progress=progress
            )
    else:
        result = await run_scenario(sc, targets, prompts=prompts, before_request=before_request)
    return write_report(result, out_dir, plots=plots, skipped_arms=skipped)


def drop_arms(
    scenario: Scenario, skip: Mapping[str, str], *, given: set[str]
) -> tuple[Scenario, dict[str, str]]:
    """The scenario without the arms in ``skip`` and the optional arms whose target is not
    in ``given``; and arm name -> why each was left out."""
    skipped: dict[str, str] = {}
    for arm in scenario.arms:
        if arm.name in skip:
            skipped[arm.name] = skip[arm.name]
        elif arm.optional and arm.target not in given:
            skipped[arm.name] = f"no --{arm.target}-url given"
    if not skipped:
        return scenario, skipped
    kept = [a for a in scenario.arms if a.name not in skipped]
    if not kept:
        raise ScenarioError(f"{scenario.name}: every arm was skipped ({skipped})")
    if scenario.baseline_arm in skipped:
        raise ScenarioError(
            f"{scenario.name}: the baseline arm {scenario.baseline_arm!r} cannot be skipped "
            f"({skipped[scenario.baseline_arm]})"
        )
    return scenario.model_copy(update={"arms": kept, "baseline": scenario.baseline_arm}), skipped
