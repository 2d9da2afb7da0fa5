"""
Reading the API's answers: size caps, decoding, and turning an error answer or a failed exchange
into the matching :class:`~airflow_provider_luma.errors.LumaError` with the server's own words.

No I/O of its own beyond reading a response it is handed; :mod:`.transport` makes the calls.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import requests
import urllib3

from airflow_provider_luma import outcome
from airflow_provider_luma.errors import (
    MAYBE_CREATED_HINT,
    LumaAuthenticationError,
    LumaConfigurationError,
    LumaConflictError,
    LumaConnectionError,
    LumaError,
    LumaForbiddenError,
    LumaNotFoundError,
    LumaRateLimitError,
    LumaRequestTimeoutError,
    LumaResponseError,
    LumaRouteNotFoundError,
    LumaServerError,
    LumaValidationError,
)

#: Largest successful answer read, in bytes (a generation is a few KB): a huge one fails the call
#: instead of filling a triggerer's memory.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: Bytes of an error answer kept for its message; the rest is never read.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: Least wait a ``Retry-After`` buys (the back-off's first step): ``0`` or a past date must not mean "at once".
RETRY_AFTER_FLOOR = 0.5
#: The generic 404 of the service's framework (NestJS) for a route it does not have.
_NO_ROUTE = re.compile(r"^Cannot (GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) /")
#: Said by every error after which the request cannot have reached the server.
NOT_CREATED_HINT = "Nothing was sent, so the generation was not created."
#: What OpenSSL says when the other side answered a TLS handshake in plain HTTP.
_PLAIN_HTTP_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"}
)


def body_limit(status: int, headers: Mapping[str, str], *, what: str) -> int:
    """
    How many bytes of an answer to read: :data:`MAX_ERROR_BODY_BYTES` of an error (cut quietly),
    :data:`MAX_ANSWER_BYTES` of a success, which fails at once when its ``Content-Length`` says more.
    """
    if status >= 400:
        return MAX_ERROR_BODY_BYTES
    length = headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
        raise _too_large(what, f"{int(length)} bytes by its Content-Length")
    return MAX_ANSWER_BYTES


def read_capped(response: requests.Response, limit: int, deadline: float | None = None) -> bytes:
    """
    At most ``limit`` + 1 bytes of a streamed ``requests`` answer (one more tells that it held more).
    Past ``deadline`` (UNIX time) between two reads, :class:`TimeoutError` (the watchdog of
    :mod:`.deadlines` ends a read blocked past it).
    """
    body = bytearray()
    for chunk in response.iter_content(chunk_size=64 * 1024):
        body += chunk
        if len(body) > limit:
            break
        if deadline is not None and time.time() >= deadline:
            raise TimeoutError("the answer took longer than the call's deadline")
    return bytes(body[: limit + 1])


async def aread_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Async twin of :func:`read_capped` (bytes after aiohttp's decompression are what count)."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await response.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def answer_text(status: int, body: bytes, limit: int, *, what: str) -> str:
    """The text of an answer read by :func:`read_capped`: UTF-8 (a proxy's page may not be), within the limit."""
    if len(body) > limit and status < 400:
        raise _too_large(what, f"more than {limit} bytes")
    return decode_body(body[:limit])


def _too_large(what: str, size: str) -> LumaResponseError:
    return LumaResponseError(
        f"The Luma API answered {what} with {size}, above the {MAX_ANSWER_BYTES // (1024 * 1024)} MiB "
        "an answer may have: refused unread."
    )


def decode_body(raw: bytes) -> str:
    """
    An answer's text: UTF-8 (a BOM dropped), undecodable bytes replaced. The ``charset`` a server or
    proxy claims is ignored on purpose: the API speaks JSON (UTF-8), and a claimed ``base64`` or
    ``idna`` makes the libraries' own decoding raise instead.
    """
    return raw.decode("utf-8-sig", errors="replace")


def error_for_response(
    status: int, text: str, headers: Mapping[str, str], *, what: str, conn_id: str, creates: bool = False
) -> LumaError:
    """
    Map an error answer of the API to the matching :class:`LumaError`, with the server's own message.

    ``creates``: the call submitted a generation, so a server error may hide one that exists anyway.
    """
    error = _error_for_response(status, text, what=what, conn_id=conn_id, creates=creates)
    error.server_message = _server_message(text)[0]
    # Honoured on any retried status (429, 503, 408...), as the official SDK does.
    error.retry_after = retry_after_seconds(headers)
    return error


def _error_for_response(status: int, text: str, *, what: str, conn_id: str, creates: bool) -> LumaError:
    message, request_id = _server_message(text)
    detail = f": {message}" if message else ""
    kwargs: dict[str, Any] = {"http_status": status, "request_id": request_id}
    if status == 401:
        return LumaAuthenticationError(
            f"The Luma API rejected the API key of connection {conn_id!r} while {what} (401{detail}): "
            "check the key in the connection's password.",
            **kwargs,
        )
    if status == 403:
        return LumaForbiddenError(
            f"The Luma API refused {what} (403{detail}): the account is out of credits or over the plan's limit; "
            "top up the account, wait for the plan's limit to reset, or use another key.",
            **kwargs,
        )
    if status == 404:
        if message and _NO_ROUTE.match(message):
            return LumaRouteNotFoundError(f"The server has no such route while {what} (404{detail}).", **kwargs)
        return LumaNotFoundError(f"Not found while {what} (404{detail}).", **kwargs)
    if status in (400, 422):
        return LumaValidationError(f"The Luma API rejected {what} ({status}{detail}).", **kwargs)
    if status == 408:
        return LumaRequestTimeoutError(
            f"The Luma API timed out waiting for the request while {what} (408{detail}).", **kwargs
        )
    if status == 409:
        hint = f" {MAYBE_CREATED_HINT}" if creates else ""
        conflict = LumaConflictError(f"The Luma API reported a conflict while {what} (409{detail}).{hint}", **kwargs)
        # The conflict may be with the very generation this create made: never resent, maybe paid.
        conflict.maybe_created = creates
        return conflict
    if status == 429:
        return LumaRateLimitError(
            f"The Luma API is rate limiting {what} (429{detail}); an Airflow pool for Luma tasks avoids this.",
            **kwargs,
        )
    if status >= 500:
        maybe_created = f" {MAYBE_CREATED_HINT}" if creates and status != 503 else ""
        error = LumaServerError(f"The Luma API failed while {what} ({status}{detail}).{maybe_created}", **kwargs)
        error.maybe_created = bool(maybe_created)
        return error
    return LumaError(f"Unexpected answer {status} while {what}{detail}.", **kwargs)


def _server_message(text: str) -> tuple[str | None, str | None]:
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return (outcome.message(text.strip(), 200) or None), None
    if not isinstance(body, Mapping):
        return None, None
    message = body.get("message") or body.get("detail") or body.get("error")
    if not isinstance(message, str) and message is not None:
        message = _json_text(message)
    details = body.get("errors")
    if details:
        message = f"{message} {_json_text(details)}" if message else _json_text(details)
    request_id = body.get("requestId")
    # The server's words go into messages that leave the provider: valid text, bounded, key-free.
    return (
        outcome.message(message, 1000) if message else None,
        outcome.message(str(request_id), 100) if request_id else None,
    )


def _json_text(value: object) -> str:
    return json.dumps(outcome.storable(value, depth=4, text_limit=500))[:500]


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """
    Seconds to wait that ``Retry-After`` asks for, given as seconds or as an HTTP date; never less than
    :data:`RETRY_AFTER_FLOOR` (``0`` or a date already past must not make the retries hammer the API).
    ``None`` when absent or unreadable: our own back-off applies.
    """
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT; a zone-less one is read as such
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(RETRY_AFTER_FLOOR, seconds)


def parse_json(text: str, *, what: str) -> Any:
    """Parse a successful answer; a body that is not JSON is a :class:`LumaResponseError`."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise LumaResponseError(f"The Luma API answered {what} with a body that is not JSON.") from None


def connection_error(
    error: BaseException,
    *,
    what: str,
    creates: bool,
    sent: bool | None = None,
    timed_out: bool = False,
    conn_id: str = "luma_default",
    host: str = "the API",
) -> LumaError:
    """
    The error for a failed exchange, saying whether the request may have been acted on.

    Before any byte of the request could reach the server (a refused or timed-out connection, a name
    that does not resolve, a TLS handshake that failed, a header refused locally) nothing was created:
    the message says so, and what to fix when it is a setting. Only failures after it was sent keep
    "may have been created" (:data:`~airflow_provider_luma.errors.MAYBE_CREATED_HINT`).

    :param sent: Whether bytes of the request were handed to a socket, when the caller knows it;
        ``None``: told from the exception.
    :param timed_out: The call's deadline ended the exchange.
    """
    if _refused_locally(error):
        return LumaConfigurationError(
            f"A header of the call could not be sent while {what} ({type(error).__name__}): the API key of "
            f"connection {conn_id!r} holds a line break or another character a header cannot carry; fix the key "
            f"in the connection's password. {NOT_CREATED_HINT}"
        )
    if _plain_http_answer(error):
        return LumaConfigurationError(
            f"{host} answered the TLS handshake in plain HTTP while {what}. The server speaks plain http, not "
            f"https: write the host as http://host:port (allowed for loopback, else with the extra "
            f"allow_insecure_http). "
            f"{NOT_CREATED_HINT}"
        )
    never = not sent if sent is not None else _never_connected(error)
    if never:
        problem = "could not be reached in time" if timed_out or _is_timeout(error) else "could not be reached"
        return never_sent_error(f"The Luma API {problem} while {what} ({type(error).__name__})", creates=creates)
    problem = "did not answer in time" if timed_out or _is_timeout(error) else "dropped the connection"
    message = f"The Luma API {problem} while {what} ({type(error).__name__})."
    if creates:
        message += f" {MAYBE_CREATED_HINT}"
    result = LumaConnectionError(message, request_sent=True)
    result.maybe_created = creates
    return result


def never_sent_error(problem: str, *, creates: bool) -> LumaConnectionError:
    """A transient error of a call that never left this machine: safe to send again, a create included."""
    hint = f" {NOT_CREATED_HINT[:-1]}: it is tried again." if creates else ""
    return LumaConnectionError(f"{problem}.{hint}", request_sent=False)


def _is_timeout(error: BaseException) -> bool:
    return isinstance(error, (asyncio.TimeoutError, requests.exceptions.Timeout))


def _refused_locally(error: BaseException) -> bool:
    """A header the HTTP client refused to send (requests' ``InvalidHeader``, aiohttp's ``ValueError``)."""
    if isinstance(error, requests.exceptions.InvalidHeader):
        return True
    return type(error) is ValueError and "header" in str(error).lower()


def _plain_http_answer(error: BaseException) -> bool:
    """Whether the TLS handshake failed because the server spoke plain HTTP (not transient: fix the host)."""
    if not isinstance(error, (requests.exceptions.SSLError, aiohttp.ClientConnectorSSLError, ssl.SSLError)):
        return False
    return any(
        isinstance(cause, ssl.SSLError) and str(getattr(cause, "reason", "")).upper() in _PLAIN_HTTP_REASONS
        for cause in _causes(error)
    )


def _never_connected(error: BaseException) -> bool:
    if isinstance(error, (aiohttp.ClientConnectorError, requests.exceptions.ConnectTimeout)):
        return True
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return True
    if isinstance(error, requests.exceptions.SSLError):
        # A certificate refused in the handshake: nothing was sent (aiohttp says the same with
        # ClientConnectorCertificateError). Other TLS errors may come mid-answer: not assumed unsent.
        return any(isinstance(cause, ssl.SSLCertVerificationError) for cause in _causes(error))
    if isinstance(error, requests.exceptions.ConnectionError):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        # NameResolutionError is a NewConnectionError: nothing was sent either.
        return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))
    return False


def _causes(error: BaseException, depth: int = 6) -> list[BaseException]:
    """``error`` and what it wraps (urllib3 nests the ssl error in a MaxRetryError's reason, in args)."""
    found = [error]
    if depth:
        for inner in (error.__cause__, error.__context__, getattr(error, "reason", None), *error.args):
            if isinstance(inner, BaseException) and inner is not error:
                found.extend(_causes(inner, depth - 1))
    return found
