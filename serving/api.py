"""The FastAPI app: every route but the fast paths' hot loop, the error handlers, /docs."""

from __future__ import annotations

from fastapi import FastAPI

from serving.errors import install_error_handlers
from serving.routes import health, model_info, predict, v2
from serving.schemas import install_model_openapi
from serving.service import ModelService


def build_api(service: ModelService) -> FastAPI:
    """A FastAPI app answering for ``service`` (its routes reach it through a dependency)."""
    api = FastAPI(
        title="kiln model server",
        description="Predictions from the model baked into this image. "
        'Errors are JSON objects: {"error": message, "code": code}.',
        version="unloaded",
        redoc_url=None,
    )
    api.state.service = service
    install_error_handlers(api)
    for module in (predict, health, model_info, v2):
        api.include_router(module.router)
    install_model_openapi(api, service)  # the document describes the loaded model's columns
    return api
