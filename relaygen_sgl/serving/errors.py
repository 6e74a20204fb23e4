"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx."""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)

    def log(self, where: str) -> None:
        """A 5xx is the server's or a runtime's fault: it goes to the log (a 4xx is the client's)."""
        if self.status >= 500:
            logger.warning("%s answered %d: %s", where, self.status, self.message)


class ClientGone(Exception):
    """The client disconnected; its relays were cancelled and their runtime calls aborted."""


def unavailable(message: str) -> APIError:
    return APIError(503, message, "service_unavailable")


M = TypeVar("M", bound=BaseModel)


def parse_body(raw: bytes, model: type[M]) -> M:
    """The request body as ``model``, or a 400 that names the offending field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"The request body is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise APIError(400, f"Invalid '{param}': {err['msg']}", param=param) from e
