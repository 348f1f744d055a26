"""FastAPI dependencies: the model service, and its model once it is loaded."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from serving.model import Model
from serving.service import ModelService
from serving.validation import RequestError


def get_service(request: Request) -> ModelService:
    """The service the FastAPI app answers for (``build_api`` keeps it in the app's state)."""
    return request.app.state.service


Service = Annotated[ModelService, Depends(get_service)]


def loaded_model(service: Service) -> Model:
    """The served model; 503 ``not_ready`` until it is loaded and warmed up."""
    model = service.loaded()
    if model is None:
        raise HTTPException(503)
    return model


LoadedModel = Annotated[Model, Depends(loaded_model)]


def named_model(name: str, model: LoadedModel, service: Service) -> Model:
    """The model a V2 route names in its path; 404 ``model_not_found`` for any other name."""
    if name != service.model_name:
        raise RequestError(
            404,
            "model_not_found",
            f"model {name!r} is not served here; this server serves {service.model_name!r}",
        )
    return model


NamedModel = Annotated[Model, Depends(named_model)]
