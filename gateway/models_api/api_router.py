"""HTTP glue for GET /v1/models and GET /v1/models/{model_id}."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.deps import InferenceKey, Models
from gateway.inference.protocol import error_responses
from gateway.models_api.protocol import ModelCard, ModelList

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList, responses=error_responses(401, 403))
async def list_models(service: Models, key: InferenceKey) -> ModelList:
    return ModelList(data=service.list_models(key))


@router.get(
    "/v1/models/{model_id:path}",
    response_model=ModelCard,
    responses=error_responses(401, 403, 404),
)
async def retrieve_model(model_id: str, service: Models, key: InferenceKey) -> ModelCard:
    return service.get_model(key, model_id)
