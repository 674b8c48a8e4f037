"""vLLM's wire shapes as the fake engine (:mod:`engine.fake`) writes them.

Error bodies, model cards, SSE events and the Prometheus text of ``/metrics``, with the
fields and texts vLLM's OpenAI server uses.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine.fake_state import FakeEngineState


def error_response(status: int, message: str, typ: str, param: str | None = None) -> JSONResponse:
    """vLLM's error envelope (its ``code`` is the HTTP status, an integer)."""
    return JSONResponse(
        {"error": {"message": message, "type": typ, "param": param, "code": status}},
        status_code=status,
    )


def denied(st: FakeEngineState, request: Request) -> Response | None:
    """The 401 vLLM answers without the right ``--api-key``; None when the key fits."""
    if st.api_key and request.headers.get("authorization") != f"Bearer {st.api_key}":
        return error_response(401, "Unauthorized", "AuthenticationError")
    return None


def model_card(name: str, root: str, parent: str | None, now: int) -> dict[str, Any]:
    """One entry of ``/v1/models``; an adapter's ``parent`` is the base model."""
    return {
        "id": name,
        "object": "model",
        "created": now,
        "owned_by": "vllm",
        "root": root,
        "parent": parent,
        "max_model_len": 2048,
    }


def event(obj: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def metrics_text(st: FakeEngineState) -> str:
    """vLLM's load gauges, then the fake's own counters and its resident memory."""
    lines = [
        "# TYPE vllm:num_requests_running gauge",
        f'vllm:num_requests_running{{model_name="{st.base_model}"}} {st.running}',
        "# TYPE vllm:num_requests_waiting gauge",
        f'vllm:num_requests_waiting{{model_name="{st.base_model}"}} 0',
    ]
    if st.answered:
        lines.append("# TYPE fake_requests_total counter")
        for (model, status), n in sorted(st.answered.items()):
            label = model.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'fake_requests_total{{model="{label}",status="{status}"}} {n}')
    lines += [
        "# TYPE fake_completion_tokens_total counter",
        f"fake_completion_tokens_total {st.completion_tokens}",
    ]
    rss = _rss_bytes()
    if rss is not None:
        lines += ["# TYPE process_resident_memory_bytes gauge"]
        lines += [f"process_resident_memory_bytes {rss}"]
    return "\n".join(lines) + "\n"
