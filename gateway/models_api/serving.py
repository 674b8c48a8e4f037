"""The model list a key may see: base, request types, adapters, versions and aliases."""

from __future__ import annotations

import time
from datetime import datetime

from adapters.errors import GatewayError
from gateway.models_api.protocol import ModelCard
from gateway.settings import ApiKey
from gateway.state import GatewayState
from router.resolver import not_found


def _ts(iso: str | None, default: int) -> int:
    if not iso:
        return default
    try:
        return int(datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return default


class ModelsService:
    """Builds model cards from the route table and the catalogue snapshot."""

    def __init__(self, gw: GatewayState) -> None:
        self.gw = gw
        self._started = int(time.time())

    def list_models(self, key: ApiKey) -> list[ModelCard]:
        gw = self.gw
        allow = set(key.allow) if key.allow is not None else None
        base = gw.settings.base_model
        now = self._started
        cards: list[ModelCard] = []
        if allow is None or "base" in allow or base in allow:
            cards.append(ModelCard(id=base, created=now, kind="base", owned_by="vllm"))
        resolver = gw.resolver
        for name, route in resolver.table.routes.items():
            if allow is not None and name not in allow:
                continue
            try:
                target = resolver.resolve(name).adapter_id
            except GatewayError:
                target = None
            cards.append(
                ModelCard(
                    id=name,
                    created=now,
                    kind="request_type",
                    parent=base,
                    adapter=target,
                    description=route.description or None,
                )
            )
        snap = resolver.snapshot
        seen_names: set[str] = set()
        for v in snap.all_versions():
            if allow is not None and v.name not in allow:
                continue
            created = _ts(getattr(v, "created_at", None), now)
            if v.name not in seen_names:
                seen_names.add(v.name)
                try:
                    cur = snap.resolve(v.name).id
                except GatewayError:
                    cur = None
                cards.append(
                    ModelCard(id=v.name, created=created, kind="adapter", parent=base, adapter=cur)
                )
            cards.append(
                ModelCard(
                    id=v.id,
                    created=created,
                    kind="adapter_version",
                    parent=base,
                    adapter=v.id,
                    description=getattr(v, "description", None) or None,
                )
            )
        alias_map = getattr(snap, "aliases", {})
        for name, aliases in alias_map.items():
            if allow is not None and name not in allow:
                continue
            for alias, version in aliases.items():
                cards.append(
                    ModelCard(
                        id=f"{name}@{alias}",
                        created=now,
                        kind="adapter_alias",
                        parent=base,
                        adapter=f"{name}@{version}",
                    )
                )
        return cards

    def get_model(self, key: ApiKey, model_id: str) -> ModelCard:
        for card in self.list_models(key):
            if card.id == model_id:
                return card
        raise not_found(model_id)
