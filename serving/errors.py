"""The API's error bodies and the exception handlers that produce them.

Every error the server answers is JSON, ``{"error": message, "code": code}``: client
errors raised as ``RequestError``, FastAPI's routing errors (404, 405), validation
errors, and anything unexpected (500, logged with its traceback).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from serving.validation import RequestError

logger = logging.getLogger(__name__)

JSON = "application/json"
NOT_READY = RequestError(503, "not_ready", "the model is not loaded; see GET /ready")
INTERNAL = RequestError(500, "internal", "the server failed to answer; see its logs")


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status)


def raw_json(body: bytes, status: int = 200) -> Response:
    """A response around JSON bytes that are already encoded (orjson)."""
    return Response(body, status_code=status, media_type=JSON)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 503:
        return error_response(503, NOT_READY.code, NOT_READY.message)
    code = str(exc.detail).lower().replace(" ", "_")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    response = error_response(exc.status_code, code, message)
    response.headers.update(exc.headers or {})  # a 405's Allow, above all
    return response


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")


async def request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return raw_json(exc.body(), exc.status)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """Anything a route did not expect: a JSON 500 (Starlette logs the traceback)."""
    return raw_json(INTERNAL.body(), INTERNAL.status)


def install_error_handlers(api: FastAPI) -> None:
    api.add_exception_handler(HTTPException, http_error)
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(RequestError, request_error)
    api.add_exception_handler(Exception, unexpected_error)
