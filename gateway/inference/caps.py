"""The operator's caps on what one request may ask of the engine.

:mod:`gateway.inference.protocol` refuses what no request may send in any
deployment (template overrides, media parts, ceilings such as 20 log-probabilities).
The caps here come from the settings, so they are checked after parsing, on the
body that goes to the engine: once as the client sent it, and again once a route's
defaults have been merged in.

Refusals are 400 ``invalid_request_error`` with ``param`` naming the field:
``max_tokens_too_large``, ``n_too_large``, ``best_of_too_large``,
``logprobs_too_large``, ``prompt_logprobs_too_large``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from adapters.errors import InvalidRequestError
from gateway.settings import Settings


def check_request_caps(
    kind: Literal["chat", "completion"], body: Mapping[str, Any], settings: Settings
) -> None:
    """Raise :class:`InvalidRequestError` if ``body`` asks for more than ``settings`` allow."""
    caps = (
        ("max_tokens", settings.max_tokens_cap, "max_tokens_too_large"),
        ("max_completion_tokens", settings.max_tokens_cap, "max_tokens_too_large"),
        ("n", settings.max_n, "n_too_large"),
        ("best_of", settings.max_best_of, "best_of_too_large"),
        # chat's `logprobs` is a switch; its count is `top_logprobs`
        (
            "top_logprobs" if kind == "chat" else "logprobs",
            settings.max_logprobs,
            "logprobs_too_large",
        ),
        ("prompt_logprobs", settings.max_prompt_logprobs, "prompt_logprobs_too_large"),
    )
    for name, cap, code in caps:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            raise InvalidRequestError(
                f"{name} is {value}, above this gateway's cap of {cap}.", code=code, param=name
            )
