"""The served model and what answering with it needs: config, metrics, readiness.

``ModelService`` is shared by the ASGI fast path (serving/app.py) and the FastAPI
routes (serving/routes/, through serving/dependencies.py). ``answer_predict`` is the
one core of POST /predict and /predict/label on both paths.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import orjson

from serving.config import ServingConfig
from serving.errors import INTERNAL, NOT_READY
from serving.metrics import Metrics
from serving.model import Model, load_model
from serving.validation import (
    PREDICT_EXAMPLE,
    RequestError,
    check_content_type,
    parse_json_object,
    read_body,
)

logger = logging.getLogger(__name__)

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class ModelService:
    """One worker's model (once loaded), its settings and its metrics."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        # Without MODEL_NAME the name comes with the model's metadata: bound in start().
        self.metrics = Metrics(config.metrics_flush_seconds, model=config.model_name)
        self.model: Model | None = None
        self.ready = False

    def start(self) -> Model:
        """Load, verify and warm up the model; only then is the service ready."""
        model = load_model(self.config)
        self.model = model
        self.metrics.set_model(model.version, model.sha256, self.model_name)
        self.ready = True
        return model

    def loaded(self) -> Model | None:
        """The model when it is loaded and the service is ready, else None."""
        return self.model if self.ready else None

    @property
    def model_name(self) -> str:
        if self.config.model_name:
            return self.config.model_name
        name = self.model.metadata.get("name") if self.model is not None else None
        return name if isinstance(name, str) and name else "model"

    async def answer_predict(
        self, scope: MutableMapping[str, Any], receive: Any, labels: bool
    ) -> tuple[int, bytes, int]:
        """The shared core of POST /predict[/label]: (status, JSON body, rows scored)."""
        model = self.model
        if model is None or not self.ready:
            return NOT_READY.status, NOT_READY.body(), 0
        content_type = content_length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
        try:
            # Checked before the body is read: a bad parameter costs no body.
            both = want_both(scope.get("query_string"))
            check_content_type(content_type)
            body = await read_body(receive, content_length, self.config.max_body_bytes)
            value = parse_json_object(body, PREDICT_EXAMPLE)
            feeds, rows = model.decoder.decode(value, self.config.max_rows, body)
        except RequestError as err:
            return err.status, err.body(), 0
        try:
            answer = model.answer(model.run(feeds), labels, both)
            out = orjson.dumps(answer, option=_NUMPY)
        except Exception:
            logger.exception("prediction failed on %d rows", rows)
            return INTERNAL.status, INTERNAL.body(), 0
        return 200, out, rows


_TRUE = {b"true", b"1", b"yes"}
_FALSE = {b"false", b"0", b"no"}


def want_both(query: bytes | None) -> bool:
    """``?labels=true`` on POST /predict: probabilities and label names in one answer.

    Other query parameters are ignored, as they always were; a bad value of this one is
    a 422 (a typo must not silently drop the labels a client asked for)."""
    if not query:
        return False
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"labels":
            value = value.lower()
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
            raise RequestError(
                422, "invalid_parameter", "query parameter 'labels' must be true or false"
            )
    return False
