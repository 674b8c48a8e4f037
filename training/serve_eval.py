"""``lora-gateway eval --gateway URL``: score arms through a running gateway, as services call it.

Each test record's user turn goes to the gateway's OpenAI API once per *arm*:

- ``adapter``: ``model`` is the request type, the messages the user turn alone; the
  gateway adds the route's system prompt, defaults and schema, as in production.
- ``prompt-only``: the base model, given the route's system prompt, defaults and schema
  (as ``response_format``): the same prompt and schema, the fair baseline.
- anything else (``shipment-classifier@2``, ``...@canary``): a model reference, sent
  like ``prompt-only``.

The route comes from ``GET /v1/routes`` (admin key). Its ``working_fields`` (answer keys
the gateway strips for a request type) are stripped here from the arms that call a model
directly, so every arm is scored on the same fields. An HTTP error answer is a wrong,
schema-invalid answer, counted by code; an unreachable gateway is a :class:`TrainingError`.
:mod:`training.serve_report` scores the answers and writes the tables. HTTP only: no
torch, no transformers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich import progress as rp
from rich.console import Console

from training.data import Example, write_jsonl
from training.errors import ConfigError, TrainingError
from training.evaluate import infer_task, load_eval_set, references
from training.metrics import parse_answer
from training.serve_report import (
    BASELINE_ARM,
    Answer,
    build_report,
    markdown_table,
    score_answers,
)

ADAPTER_ARM = "adapter"
DEFAULT_ARMS = (BASELINE_ARM, ADAPTER_ARM)


@dataclass(frozen=True)
class RouteSpec:
    """What the scorer needs of one route, as ``GET /v1/routes`` describes it."""

    name: str
    system_prompt: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    json_schema: dict[str, Any] | None = None
    working_fields: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> RouteSpec:
        return cls(
            name=str(info["name"]),
            system_prompt=info.get("system_prompt"),
            defaults=dict(info.get("defaults") or {}),
            json_schema=info.get("json_schema"),
            working_fields=tuple(info.get("working_fields") or ()),
            info=info,
        )


def request_body(
    arm: str, route: RouteSpec, user: list[dict[str, str]], *, base_model: str = "base"
) -> dict[str, Any]:
    """The chat request one arm sends for one record (see the module docstring)."""
    if arm == ADAPTER_ARM:
        return {"model": route.name, "messages": user}
    system = [{"role": "system", "content": route.system_prompt}] if route.system_prompt else []
    body: dict[str, Any] = {**route.defaults}
    body["model"] = base_model if arm == BASELINE_ARM else arm
    body["messages"] = [*system, *user]
    if route.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            # The name the gateway itself gives a route's schema.
            "json_schema": {
                "name": route.name.replace(".", "_"),
                "schema": route.json_schema,
                "strict": True,
            },
        }
    return body


def strip_fields(text: str, fields: Sequence[str]) -> str:
    """The answer without ``fields`` (top-level keys), re-serialised; unchanged otherwise."""
    obj = parse_answer(text) if fields else None
    if obj is None or not any(f in obj for f in fields):
        return text
    return json.dumps({k: v for k, v in obj.items() if k not in fields}, ensure_ascii=False)


def _error_code(resp: httpx.Response) -> str:
    try:
        code = resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    return str(code) if code else f"http_{resp.status_code}"


def _unreachable(url: str, exc: Exception) -> TrainingError:
    return TrainingError(f"cannot reach the gateway at {url}: {exc}")


async def fetch_route(
    client: httpx.AsyncClient, url: str, request_type: str, admin_key: str
) -> RouteSpec:
    try:
        resp = await client.get(
            f"{url}/v1/routes", headers={"Authorization": f"Bearer {admin_key}"}
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _unreachable(url, exc) from exc
    if resp.status_code != 200:
        raise TrainingError(
            f"GET {url}/v1/routes answered {resp.status_code} ({_error_code(resp)}); "
            "is --admin-key an admin key of this gateway?"
        )
    routes = {r["name"]: r for r in resp.json()["routes"]}
    if request_type not in routes:
        raise ConfigError(
            f"the gateway has no request type {request_type!r}; known: "
            f"{', '.join(sorted(routes)) or '(none)'}",
            field="--request-type",
        )
    return RouteSpec.from_info(routes[request_type])


async def ask(client: httpx.AsyncClient, url: str, body: dict[str, Any], api_key: str) -> Answer:
    """Send one chat request; every answer, error or not, becomes an :class:`Answer`."""
    t0 = time.perf_counter()
    try:
        resp = await client.post(
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _unreachable(url, exc) from exc
    except httpx.TimeoutException:
        return Answer(error="timeout", latency_ms=round((time.perf_counter() - t0) * 1000, 2))
    except httpx.TransportError:
        return Answer(error="transport_error")
    ms = round((time.perf_counter() - t0) * 1000, 2)
    version = resp.headers.get("x-adapter-version")
    if resp.status_code in (401, 403):  # a wrong key is no answer of the model's
        raise TrainingError(f"the gateway refused the API key: {_error_code(resp)}")
    if resp.status_code != 200:
        code = _error_code(resp)
        return Answer(status=resp.status_code, error=code, latency_ms=ms, adapter_version=version)
    try:
        obj = resp.json()
        text = obj["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        return Answer(status=200, error="bad_response", latency_ms=ms, adapter_version=version)
    usage = obj.get("usage") or {}
    return Answer(str(text), 200, None, ms, usage, version)


# --- the run ----------------------------------------------------------------------------------
def user_turns(ex: Example) -> list[dict[str, str]]:
    """The record's prompt without its system turn: the route brings its own."""
    return [m for m in ex.prompt_messages() if m["role"] != "system"]


def default_out_dir(request_type: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path("runs") / f"eval-{request_type}-{stamp}"


def check_out_dir(out_dir: Path) -> None:
    for d in (out_dir.resolve(), *out_dir.resolve().parents):
        if (d / "adapter_config.json").is_file():
            raise ConfigError(
                f"{out_dir} is inside the adapter directory {d}; an adapter directory holds "
                "what is uploaded, not gateway evaluations",
                field="--out",
            )


def _progress(console: Console | None, disable: bool) -> rp.Progress:
    """The bars of ``training.callbacks.make_progress`` (which imports transformers)."""
    return rp.Progress(
        rp.TextColumn("[progress.description]{task.description}"),
        rp.BarColumn(),
        rp.MofNCompleteColumn(),
        rp.TextColumn("{task.fields[info]}"),
        rp.TimeElapsedColumn(),
        rp.TimeRemainingColumn(),
        console=console,
        disable=disable,
    )


async def score_served(
    url: str,
    request_type: str,
    examples: list[Example],
    *,
    arms: Sequence[str] = DEFAULT_ARMS,
    api_key: str,
    admin_key: str,
    task: str | None = None,
    concurrency: int = 8,
    request_timeout: float = 600.0,
    base_model: str = "base",
    seed: int = 0,
    client: httpx.AsyncClient | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(report, prediction rows) of ``arms`` on ``examples`` through the gateway at ``url``."""
    if concurrency < 1:
        raise ConfigError("must be at least 1", field="--concurrency")
    if not arms or len(set(arms)) != len(arms):
        raise ConfigError(f"arms must be distinct and not empty, got {list(arms)}", field="--arms")
    url = url.rstrip("/")
    task = infer_task(examples, task)
    refs = references(examples, task)
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(request_timeout, connect=10.0))
    started = time.monotonic()
    try:
        route = await fetch_route(http, url, request_type, admin_key)
        gate = asyncio.Semaphore(concurrency)
        results = {arm: [Answer() for _ in examples] for arm in arms}
        errors = Counter[str]()
        with _progress(console, not show_progress) as progress:
            bars = {arm: progress.add_task(arm, total=len(examples), info="") for arm in arms}

            async def one(arm: str, i: int) -> None:
                body = request_body(arm, route, user_turns(examples[i]), base_model=base_model)
                async with gate:
                    answer = await ask(http, url, body, api_key)
                if arm != ADAPTER_ARM:  # the gateway strips them only for its request types
                    answer.text = strip_fields(answer.text, route.working_fields)
                results[arm][i] = answer
                errors[arm] += answer.error is not None
                progress.update(bars[arm], advance=1, info=f"{errors[arm]} errors")

            # Record-major: the arms are interleaved, so they meet the same load on the gateway
            # and their latencies compare.
            jobs = [asyncio.ensure_future(one(a, i)) for i in range(len(examples)) for a in arms]
            try:
                await asyncio.gather(*jobs)
            except BaseException:  # unreachable, or the key refused: stop the rest first
                for job in jobs:
                    job.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)
                raise
    finally:
        if client is None:
            await http.aclose()
    scored = {
        arm: (results[arm], score_answers(task, results[arm], refs, route.json_schema))
        for arm in arms
    }
    route_meta = {k: route.info.get(k) for k in ("adapter", "resolves_to", "split", "defaults")}
    report = build_report(
        task,
        scored,
        seed=seed,
        request_type=request_type,
        gateway=url,
        n=len(examples),
        route={**route_meta, "working_fields": list(route.working_fields)},
        requests={"arms": list(arms), "base_model": base_model, "concurrency": concurrency},
    )
    report["seconds"] = round(time.monotonic() - started, 1)
    rows = []
    for i, (ex, ref) in enumerate(zip(examples, refs, strict=True)):
        per_arm = {}
        for arm, (answers, per) in scored.items():
            a = asdict(answers[i])
            per_arm[arm] = {"answer": a.pop("text"), **a, **per[i]}
        rows.append(
            {"source": ex.source, "id": ex.extra.get("id"), "reference": ref, "arms": per_arm}
        )
    return report, rows


def write_report(out_dir: Path, report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "eval.md").write_text(markdown_table(report))
    write_jsonl(out_dir / "predictions.jsonl", rows)


def evaluate_served(
    url: str,
    request_type: str,
    dataset: Path,
    *,
    out_dir: Path | None = None,
    limit: int | None = None,
    **kw: Any,
) -> tuple[dict[str, Any], Path]:
    """Load ``dataset``, score it (:func:`score_served`, keywords passed on), and write
    eval.json, eval.md and predictions.jsonl to ``out_dir``; return (report, out_dir)."""
    out_dir = out_dir or default_out_dir(request_type)
    check_out_dir(out_dir)
    examples = load_eval_set(dataset, limit=limit)
    report, rows = asyncio.run(score_served(url, request_type, examples, **kw))
    report["dataset"] = str(dataset)
    report["dataset_sha256"] = hashlib.sha256(dataset.read_bytes()).hexdigest()
    write_report(out_dir, report, rows)
    return report, out_dir
