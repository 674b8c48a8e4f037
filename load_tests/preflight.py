"""Pre-flight: fail fast, with one clear line, before a run starts.

For each target an arm uses: the target must answer ``GET /v1/models`` (else it is
unreachable), must accept the key (401/403 otherwise), and must know every model name
the arms will send. A name not in the model list is looked up with
``GET /v1/models/{id}`` and, if the server has no such endpoint, with one tiny request
(``max_tokens=1``); a 404 there means an unknown request type or model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import quote

import aiohttp

from load_tests.client import OpenAIClient, error_type_of
from load_tests.errors import LoadTestError
from load_tests.scenario import Arm, Scenario

PREFLIGHT_TIMEOUT_S = 10.0


class PreflightError(LoadTestError, RuntimeError):
    """A target cannot run this scenario; the message is one line naming target and cause."""


def models_sent(arm: Arm) -> list[str]:
    """Every `model` value an arm can send."""
    if arm.rotate_models:
        return list(dict.fromkeys(arm.rotate_models))
    return list(dict.fromkeys(arm.model_map.get(k, k) for k in arm.mix))


def _auth_failure(target: str, status: int) -> PreflightError:
    return PreflightError(f"{target}: the server rejected the API key (HTTP {status})")


async def list_models(name: str, client: OpenAIClient) -> list[str]:
    """GET /v1/models, turned into PreflightError on any failure."""
    try:
        status, body = await client.get("/v1/models", timeout_s=PREFLIGHT_TIMEOUT_S)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise PreflightError(f"{name}: {client.base_url} is unreachable ({reason})") from None
    if status in (401, 403):
        raise _auth_failure(name, status)
    if status != 200:
        kind, message = error_type_of(status, body)
        raise PreflightError(f"{name}: GET /v1/models answered HTTP {status} ({kind}: {message})")
    try:
        data = json.loads(body)["data"]
        return [str(m["id"]) for m in data]
    except (ValueError, KeyError, TypeError):
        raise PreflightError(
            f"{name}: GET /v1/models did not return an OpenAI model list"
        ) from None


async def check_model(name: str, client: OpenAIClient, model: str, arm: Arm) -> None:
    """Raise PreflightError unless the target knows ``model``."""
    try:
        status, body = await client.get(
            f"/v1/models/{quote(model, safe='')}", timeout_s=PREFLIGHT_TIMEOUT_S
        )
        if status == 200:
            return
        if status in (401, 403):
            raise _auth_failure(name, status)
        # No such endpoint (vLLM) or the name is unknown there: try one tiny request.
        path = "/v1/chat/completions" if arm.endpoint == "chat" else "/v1/completions"
        payload: dict[str, object] = {"model": model, "max_tokens": 1, "stream": False}
        if arm.endpoint == "chat":
            payload["messages"] = [{"role": "user", "content": "ping"}]
        else:
            payload["prompt"] = "ping"
        timeout = aiohttp.ClientTimeout(total=max(PREFLIGHT_TIMEOUT_S, client.timeout.total or 0))
        async with client.session.post(
            client.base_url + path, json=payload, timeout=timeout
        ) as resp:
            status, body = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise PreflightError(f"{name}: request for {model!r} failed ({exc})") from None
    if status < 300:
        return
    kind, message = error_type_of(status, body)
    if status in (401, 403):
        raise _auth_failure(name, status)
    if status == 404:
        raise PreflightError(
            f"{name}: unknown request type or model {model!r} (HTTP 404 {kind}: {message})"
        )
    raise PreflightError(
        f"{name}: a first request for {model!r} failed with HTTP {status} ({kind}: {message})"
    )


async def preflight(
    scenario: Scenario, clients: Mapping[str, OpenAIClient]
) -> dict[str, list[str]]:
    """Check every target and model the scenario uses; return the models each target lists."""
    listed: dict[str, list[str]] = {}
    for arm in scenario.arms:
        if arm.target not in clients:
            flag = f"--{arm.target}-url"
            raise PreflightError(f"arm {arm.name!r} targets {arm.target!r}, but no {flag} given")
    for target in dict.fromkeys(a.target for a in scenario.arms):
        listed[target] = await list_models(target, clients[target])
    for arm in scenario.arms:
        known = set(listed[arm.target])
        for model in models_sent(arm):
            if model not in known:
                await check_model(arm.target, clients[arm.target], model, arm)
                known.add(model)
    return listed
