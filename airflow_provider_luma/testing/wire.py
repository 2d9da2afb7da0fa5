"""What every part of the simulator says on the wire: error answers, request bodies read safely, timestamps.

A request body is read once, here: bounded in size (aiohttp's ``client_max_size``), strict UTF-8 JSON with no
``NaN``/``Infinity`` and nesting at most :data:`MAX_BODY_DEPTH` deep, and logged as bounded text. So no body
can put into the request log or a generation a value that later fails to copy or to encode.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

__all__ = [
    "ENTRY_KEY",
    "MAX_BODY_DEPTH",
    "ApiError",
    "BodyError",
    "envelope",
    "iso",
    "nest_not_found",
    "parse_body",
    "request_key",
]

#: Bodies nested deeper than this are refused (the API's real bodies are 3 levels deep at most).
MAX_BODY_DEPTH = 32

STATUS_MESSAGES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: insufficient credits on this API key",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def request_key(name: str) -> Any:
    """A key for a request's storage (aiohttp >= 3.13 wants typed keys; older ones have none)."""
    factory = getattr(web, "RequestKey", None)
    return factory(name, object) if factory is not None else name


#: ``request[ENTRY_KEY]``: the request's log entry (handlers add ``held``, ``released_by``, ...).
ENTRY_KEY: Any = request_key("luma_sim_entry")


class ApiError(Exception):
    """An error answer, rendered in the format of the family whose route raised it.

    :param status: The HTTP status.
    :param message: The message (default: the status's usual words).
    :param errors: Validation details, ``[{"path", "message"}]``.
    :param headers: Extra headers of the answer (``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        message: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or STATUS_MESSAGES.get(status, "Error"))
        self.status = status
        self.message = message or STATUS_MESSAGES.get(status, "Error")
        self.errors = errors
        self.headers = headers or {}


def iso(ts: float) -> str:
    """``2026-01-02T03:04:05.678Z``."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(request: web.Request, exc: ApiError, *, status_code_as_string: bool = False) -> dict[str, Any]:
    """The AI/ML API's error body: ``{"message", "path", "requestId", "statusCode", "timestamp"}`` (+ ``errors``)."""
    body: dict[str, Any] = {
        "message": exc.message,
        "path": request.path,
        "requestId": str(uuid.uuid4()),
        "statusCode": str(exc.status) if status_code_as_string else exc.status,
        "timestamp": iso(time.time()),
    }
    if exc.errors is not None:
        body["errors"] = exc.errors
    return body


def nest_not_found(request: web.Request) -> web.Response:
    """NestJS's answer to a route it does not have (not the service's error envelope)."""
    body = {"message": f"Cannot {request.method} {request.path}", "error": "Not Found", "statusCode": 404}
    return web.json_response(body, status=404)


class BodyError(ValueError):
    """A request body that is not acceptable JSON."""


def _refuse_constant(name: str) -> Any:
    raise BodyError(f"Invalid JSON: {name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BodyError(f"Invalid JSON: {text[:40]} is out of range")
    return value


def _depth_ok(value: Any) -> bool:
    """Whether ``value`` nests at most :data:`MAX_BODY_DEPTH` lists/objects deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_BODY_DEPTH:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def parse_body(raw: bytes, *, finite: bool = True) -> Any:
    """The JSON value of a request body (``None`` if empty); :class:`BodyError` saying why it is refused.

    :param finite: Refuse ``NaN``, ``Infinity`` and numbers out of a float's range (as a strict JSON parser
        would). Off for the control API, whose checks then refuse them naming the option.
    """
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("Invalid JSON: not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite) if finite else json.loads(text)
    except BodyError:
        raise
    except RecursionError:
        raise BodyError(f"Invalid JSON: nested deeper than {MAX_BODY_DEPTH} levels") from None
    except ValueError as exc:
        raise BodyError(f"Invalid JSON: {str(exc)[:100]}") from None
    if not _depth_ok(value):
        raise BodyError(f"Invalid JSON: nested deeper than {MAX_BODY_DEPTH} levels")
    return value
