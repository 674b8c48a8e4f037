"""The services built once per app on its :class:`~gateway.state.GatewayState`.

Kept on ``app.state.services`` by the lifespan and handed to the endpoints by the
dependencies in :mod:`gateway.deps`. They import the state, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.admin.serving import AdminService
from gateway.inference.serving import InferenceService
from gateway.models_api.serving import ModelsService


@dataclass(frozen=True)
class Services:
    """The inference, model-listing and admin services (none holds per-request state)."""

    inference: InferenceService
    models: ModelsService
    admin: AdminService
