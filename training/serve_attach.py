"""``lora-gateway eval --gateway ... [--attach REF]``: score through a gateway, and attach
the report to the versions it scored.

A version uploaded before it was scored (a canary) gets its report afterwards:
``--attach name@N`` (or ``name@alias``, resolved to its version *before* scoring, so an
alias that moves meanwhile cannot take another version's report) sends the written
``eval.json`` to ``PUT /v1/adapters/{name}/versions/{N}/eval``; ``--attach arms``
attaches it to every arm that names a model (``name@N``, ``name@alias``). The gateway
reads the score promotion will use, and refuses a report that gives the version none (in
a multi-arm report: no arm answered by that version alone). HTTP only, through
:class:`gateway.admin_client.AdminClient`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from gateway.admin_client import AdminAPIError, AdminClient
from training.errors import ConfigError, TrainingError
from training.serve_eval import ADAPTER_ARM
from training.serve_report import BASELINE_ARM

ATTACH_ARMS = "arms"
"""``--attach arms``: every arm that names a model."""


def _split_ref(ref: str) -> tuple[str, str]:
    name, sep, selector = ref.partition("@")
    if not (sep and name and selector):
        raise ConfigError(f"{ref!r} names no version: give name@N or name@alias", field="--attach")
    return name, selector


def resolve_targets(
    client: AdminClient, attach: Sequence[str], arms: Sequence[str]
) -> dict[str, tuple[str, int]]:
    """``{"name@N": (name, N)}`` for each ``--attach`` value (``arms``: each model arm)."""
    refs: list[str] = []
    for value in attach:
        if value == ATTACH_ARMS:
            refs += [a for a in arms if a not in (BASELINE_ARM, ADAPTER_ARM)]
        else:
            refs.append(value)
    if attach and not refs:
        raise ConfigError(
            f"--attach {ATTACH_ARMS}: no arm names a model (--arms {','.join(arms)})",
            field="--attach",
        )
    targets: dict[str, tuple[str, int]] = {}
    adapters: dict[str, dict[str, Any]] = {}
    for ref in refs:
        name, selector = _split_ref(ref)
        try:  # checked before scoring, which takes minutes
            adapter = adapters.get(name) or adapters.setdefault(name, client.get_adapter(name))
        except AdminAPIError as exc:
            raise TrainingError(f"cannot attach the report to {ref}: {exc}") from exc
        if selector.isdigit():
            version = int(selector)
            if version not in {v["version"] for v in adapter["versions"]}:
                raise ConfigError(f"{name} has no version {version}", field="--attach")
        elif selector in adapter["aliases"]:
            version = int(adapter["aliases"][selector]["version"])
        else:
            raise ConfigError(f"{name} has no alias {selector!r}", field="--attach")
        targets[f"{name}@{version}"] = (name, version)
    return targets


def attach_report(
    client: AdminClient,
    targets: dict[str, tuple[str, int]],
    report: dict[str, Any],
    *,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Attach ``report`` to each target; the gateway's answers. TrainingError on a refusal."""
    done = []
    for vid, (name, version) in targets.items():
        try:
            out = client.attach_eval(name, version, report)
        except AdminAPIError as exc:
            raise TrainingError(f"the gateway did not attach the report to {vid}: {exc}") from exc
        if console is not None:
            s = out["score"]
            ci = f" ({s['ci95'][0]:g}–{s['ci95'][1]:g})" if s.get("ci95") else ""
            console.print(
                f"attached to {vid}: {s['metric']} {s['value']:g}{ci} (arm {s['arm']!r})",
                markup=False,
                highlight=False,
            )
        done.append(out)
    return done


def eval_served(
    gateway: str,
    request_type: str | None,
    dataset: Path,
    *,
    out_dir: Path | None,
    task: str | None,
    limit: int | None,
    arms: str,
    attach: Sequence[str] = (),
    api_key: str | None,
    admin_key: str | None,
    concurrency: int,
    timeout: float,
    quiet: bool,
    console: Console,
    out: Console,
) -> None:
    """``eval --gateway``: see :mod:`training.serve_eval`. Raises TrainingError."""
    if not request_type:
        raise ConfigError("--gateway needs the request type to score", field="--request-type")
    if not admin_key:
        raise ConfigError(
            "reading the route needs the admin key (or LORA_GATEWAY_ADMIN_KEY)", field="--admin-key"
        )
    from training.serve_eval import evaluate_served
    from training.serve_report import markdown_table

    arm_list = [a.strip() for a in arms.split(",") if a.strip()]
    with AdminClient(gateway, admin_key) as client:
        targets = resolve_targets(client, attach, arm_list)
        report, where = evaluate_served(
            gateway,
            request_type,
            dataset,
            out_dir=out_dir,
            limit=limit,
            arms=arm_list,
            api_key=api_key or admin_key,
            admin_key=admin_key,
            task=task,
            concurrency=concurrency,
            request_timeout=timeout,
            console=console,
            show_progress=not quiet,
        )
        out.print(markdown_table(report), soft_wrap=True, markup=False, highlight=False)
        console.print(f"wrote {where / 'eval.json'}")
        attach_report(client, targets, report, console=console)
