"""
What a wait or a create hands to Airflow, defined once.

* **The trigger event**, schema version :data:`EVENT_SCHEMA` (``{"v": 1, "status", "message",
  "generations"}``): :func:`event_of` writes it, :func:`read_event` reads it, and also the events of
  0.2.0 (the same keys, without ``"v"``).
* **The task's return value** (XCom): :func:`generation_result` (the generate operator) and
  :func:`sensor_result`.
* **The Airflow exception** each ending raises: :func:`settle`, one table for the sensor, the
  generate operator and the hook (:data:`ROLES`).

Everything that crosses here is made storable once by :func:`storable`, because Airflow's own
encoders refuse what JSON parsers accept: text becomes valid UTF-8 without NUL (a lone surrogate or
NUL is replaced by U+FFFD: msgpack and UTF-8 refuse the first, PostgreSQL's JSONB the second);
numbers become what JSON and msgpack hold (finite floats; integers within ``±2**63`` else their
decimal text); nesting is cut at :data:`MAX_DEPTH` levels, text at :data:`MAX_TEXT_BYTES`, the
whole return value at :data:`MAX_RESULT_BYTES`. An event carries only the compact fields
(:data:`EVENT_FIELDS`), each bounded, so that it weighs at most :data:`MAX_EVENT_GENERATION_BYTES`
per generation plus :data:`MAX_MESSAGE_BYTES`. And every message is redacted (:func:`redact`): the
API keys this process has read are replaced by ``***``; :func:`safe_url` shows a URL without its
userinfo, query or fragment.

Imports only :mod:`.errors` at load (the parsers and the wait use these rules); the model is
imported where an event is read back.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

from airflow_provider_luma.errors import LumaError, LumaGenerationFailedError, LumaWaitTimeoutError

if TYPE_CHECKING:
    from airflow_provider_luma.models import Generation
    from airflow_provider_luma.steps import Finished

log = logging.getLogger(__name__)

#: The version of the trigger event's schema; events without ``"v"`` are 0.2.0's (same keys).
EVENT_SCHEMA = 1
#: Levels of nesting a return value keeps; deeper values become :data:`DEPTH_MARKER`.
MAX_DEPTH = 8
#: UTF-8 bytes of any text in a return value (a prompt echo, an error object ...).
MAX_TEXT_BYTES = 4096
#: UTF-8 bytes of the whole return value (as compact JSON); a larger one keeps only the event's fields.
MAX_RESULT_BYTES = 256 * 1024
#: UTF-8 bytes of a failure reason, in an event and wherever it is quoted.
MAX_REASON_BYTES = 1024
#: UTF-8 bytes of an event's (or an exception's) message.
MAX_MESSAGE_BYTES = 2048
#: UTF-8 bytes of a video URL; a longer one is unusable, and dropped (with a warning) when read.
MAX_URL_BYTES = 4096
#: What one generation may weigh in an event (compact JSON): the sum of its fields' bounds, rounded up.
MAX_EVENT_GENERATION_BYTES = 8 * 1024
#: The fields of a generation an event carries, with the UTF-8 bytes each may hold.
EVENT_FIELDS: Mapping[str, int] = {
    "id": 512,
    "state": 64,
    "failure_reason": MAX_REASON_BYTES,
    "video_url": MAX_URL_BYTES,
    "created_at": 64,
    "api": 16,
    "model": 128,
    "generation_type": 64,
}
#: Entries of ``usage`` an event keeps (name and value: 64 bytes each).
MAX_USAGE_ENTRIES = 8
#: Integers beyond these are stored as their decimal text: msgpack holds 64 bits, Airflow's XCom path signed.
INT_RANGE = (-(2**63), 2**63 - 1)
#: What replaces the end of a text cut to its bound.
TRUNCATED = " …[truncated]"
#: What replaces a value nested deeper than :data:`MAX_DEPTH`.
DEPTH_MARKER = f"[nested deeper than {MAX_DEPTH} levels: left out]"
#: What replaces an API key in any message.
REDACTED = "***"

Status = Literal["success", "failed", "timeout", "error"]
STATUSES: tuple[Status, ...] = ("success", "failed", "timeout", "error")
Role = Literal["sensor", "generate", "hook"]

# -- text, numbers, depth: what Airflow can store ----------------------------------------------------


def storable_text(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """
    ``text`` as valid UTF-8 without NUL, at most ``limit`` UTF-8 bytes (cut with :data:`TRUNCATED`).

    A surrogate pair split in two code points is joined; a lone surrogate (half of one, as a
    JavaScript service writes a string cut inside an emoji) and NUL become U+FFFD.
    """
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        data = text.encode("utf-8")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
        data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = TRUNCATED.encode("utf-8")
    return data[: max(0, limit - len(marker))].decode("utf-8", "ignore") + TRUNCATED


def storable(value: Any, *, depth: int = MAX_DEPTH, text_limit: int = MAX_TEXT_BYTES) -> Any:
    """
    ``value`` as plain data that JSON (strict: no NaN), msgpack and PostgreSQL's JSONB all hold,
    redacted. Mappings become dicts with text keys, sequences lists; floats that are not finite
    become ``None``; integers beyond :data:`INT_RANGE` their decimal text; anything else its text.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if INT_RANGE[0] <= value <= INT_RANGE[1]:
            return int(value)
        try:
            return storable_text(str(value), 64)
        except ValueError:  # beyond Python's own limit of digits for str()
            return "[an integer too large to store]"
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return storable_text(redact(str(value)), text_limit)
    if isinstance(value, (Mapping, list, tuple)):
        if depth <= 0:
            return DEPTH_MARKER
        if isinstance(value, Mapping):
            return {
                storable_text(redact(str(key)), 256): storable(item, depth=depth - 1, text_limit=text_limit)
                for key, item in value.items()
            }
        return [storable(item, depth=depth - 1, text_limit=text_limit) for item in value]
    return storable_text(redact(str(value)), text_limit)


def json_bytes(value: Any) -> int:
    """The UTF-8 bytes of a storable value as compact JSON (what the metadata DB holds)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def check_storable(value: Any, what: str) -> None:
    """Raise :class:`LumaError` unless ``value`` is strict JSON of valid UTF-8 without NUL (belt and braces)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as error:
        raise LumaError(f"{what} cannot be stored by Airflow ({type(error).__name__}).") from None
    if "\x00" in text or "\\u0000" in text:
        raise LumaError(f"{what} holds a NUL character, which PostgreSQL cannot store.")


# -- redaction ---------------------------------------------------------------------------------------

#: The API keys this process read from connections (the latest ones): removed from every message.
_SECRETS: deque[str] = deque(maxlen=64)
_SECRETS_LOCK = threading.Lock()
#: Shorter keys are not looked for (every message would lose its letters): real keys are far longer.
MIN_SECRET_LENGTH = 6


def remember_secret(secret: str | None) -> None:
    """Have :func:`redact` remove ``secret`` from every message from now on (the hook calls it per key read)."""
    if secret and len(secret) >= MIN_SECRET_LENGTH and secret not in _SECRETS:
        with _SECRETS_LOCK:
            if secret not in _SECRETS:
                _SECRETS.append(secret)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every remembered API key (and each of ``secrets``) replaced by :data:`REDACTED`."""
    for secret in (*_SECRETS, *secrets):
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def safe_url(url: str) -> str:
    """``url`` as it may be shown: scheme, host, port and path, without userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(an unreadable URL)"
    if not parts.scheme and not netloc:
        return storable_text(url.split("?", 1)[0].split("#", 1)[0], 512)
    return storable_text(f"{parts.scheme}://{netloc}{parts.path}", 512)


def message(text: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """A message that may leave the provider: redacted, valid UTF-8, bounded."""
    return storable_text(redact(text), limit)


# -- the trigger event -------------------------------------------------------------------------------


def event_generation(generation: Generation) -> dict[str, Any]:
    """The compact, bounded form of a generation an event carries (:data:`EVENT_FIELDS` and ``usage``)."""
    values = {
        "id": generation.id,
        "state": generation.state,
        "failure_reason": generation.failure_reason,
        "video_url": generation.video_url,
        "created_at": generation.created_at,
        "api": generation.api.value if generation.api is not None else None,
        "model": generation.raw.get("model"),
        "generation_type": generation.raw.get("generation_type"),
    }
    compact: dict[str, Any] = {
        name: storable_text(redact(value), EVENT_FIELDS[name]) if isinstance(value, str) else None
        for name, value in values.items()
    }
    if compact["video_url"] is not None and compact["video_url"].endswith(TRUNCATED):
        compact["video_url"] = None  # a cut URL leads nowhere
    compact["usage"] = _usage(generation.usage)
    return compact


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    kept = {}
    for key, value in list(usage.items())[:MAX_USAGE_ENTRIES]:
        kept[storable_text(str(key), 64)] = storable(value, depth=0, text_limit=64)
    return kept


def event_of(finished: Finished) -> dict[str, Any]:
    """The trigger event of a wait's ending: schema :data:`EVENT_SCHEMA`, storable, redacted, bounded."""
    return {
        "v": EVENT_SCHEMA,
        "status": finished.status,
        "message": message(finished.message),
        "generations": [event_generation(generation) for generation in finished.generations],
    }


def error_event(text: str) -> dict[str, Any]:
    """The ``error`` event of a wait that could not even run (its message made safe here)."""
    return {"v": EVENT_SCHEMA, "status": "error", "message": message(text), "generations": []}


def read_event(event: Any) -> Finished:
    """
    The ending an event describes: of schema :data:`EVENT_SCHEMA`, of 0.2.0 (no ``"v"``), or of a
    later schema (read by the fields this version knows). An unusable event is an ``error`` ending.
    """
    from airflow_provider_luma.models import Generation
    from airflow_provider_luma.steps import Finished

    if not isinstance(event, Mapping) or event.get("status") not in STATUSES:
        shown = storable_text(repr(event), 300)
        return Finished("error", message(f"The Luma trigger sent no usable event ({shown})."))
    if isinstance(event.get("v"), int) and event["v"] > EVENT_SCHEMA:
        log.warning(
            "A Luma event of schema v%s, newer than this provider's v%s: reading what it knows.",
            event["v"],
            EVENT_SCHEMA,
        )
    generations = []
    for item in event.get("generations") or []:
        try:
            generations.append(Generation.from_dict(item))
        except LumaError:
            log.warning("A generation in the Luma event is unreadable: left out.")
    text = event.get("message")
    return Finished(event["status"], message(text if isinstance(text, str) else "no message"), generations)


# -- the task's return value -------------------------------------------------------------------------


def generation_result(generation: Generation, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """
    The generate operator's return value: the generation's dict (the API's object, without the
    request echo) with ``extra`` on top, storable; past :data:`MAX_RESULT_BYTES`, only the event's
    fields and ``extra`` (``"truncated": True`` says so).
    """
    value = storable({**generation.to_dict(), **(extra or {})})
    if json_bytes(value) > MAX_RESULT_BYTES:
        log.warning(
            "The Luma API's answer for generation %s is larger than the %d KiB a return value keeps: returning "
            "its main fields only.",
            storable_text(generation.id, 128),
            MAX_RESULT_BYTES // 1024,
        )
        value = {**event_generation(generation), **storable(dict(extra or {})), "truncated": True}
    check_storable(value, "The generate task's return value")
    return value


def sensor_result(generations: list[Generation], *, one: bool) -> Any:
    """The sensor's return value: the generation's dict (``one``), or the list of them; storable."""
    values = [storable(generation.to_dict()) for generation in generations]
    value = values[0] if one else values
    check_storable(value, "The sensor's return value")
    return value


def storable_video_url(generation: Generation) -> str:
    """The video URL as an XCom value (``""`` while there is none: Airflow 3.0 refuses a null XCom)."""
    url = generation.video_url or ""
    return storable_text(url, MAX_URL_BYTES) if len(url.encode("utf-8", "replace")) <= MAX_URL_BYTES else ""


# -- endings to Airflow's exceptions -----------------------------------------------------------------

#: What each ending raises, per role. ``failed``: a sensor fails at once (a failed generation stays
#: failed), the generate operator raises :class:`LumaGenerationFailedError`, which its retries may
#: replace with a new generation. ``timeout``: the sensor's own Airflow time-out; the operator's
#: :class:`LumaWaitTimeoutError` is retried (a retry reuses the generation on Airflow 3.3+).
#: ``error``: the API error that ended the wait. ``soft_fail`` (sensor) skips instead of any of them.
ROLES: Mapping[Role, Mapping[Status, str]] = {
    "sensor": {"failed": "AirflowFailException", "timeout": "AirflowSensorTimeout", "error": "LumaError"},
    "generate": {"failed": "LumaGenerationFailedError", "timeout": "LumaWaitTimeoutError", "error": "LumaError"},
    "hook": {"failed": "LumaGenerationFailedError", "timeout": "LumaWaitTimeoutError", "error": "LumaError"},
}


def settle(finished: Finished, *, role: Role, soft_fail: bool = False) -> list[Generation]:
    """The generations of a successful ending; otherwise raise what :data:`ROLES` says for ``role``."""
    if finished.status == "success":
        return finished.generations
    text = message(finished.message)
    if soft_fail:
        # Raised from the time-out it replaces: the deadline stays known (cancel_on_kill cancels at it).
        cause = _timed_out(text, role) if finished.status == "timeout" else None
        raise AirflowSkipException(f"Skipping (soft_fail): {text}") from cause
    if finished.status == "failed":
        if role == "sensor":
            raise AirflowFailException(text)
        failed = next((g for g in finished.generations if g.is_failed), None)
        if failed is None:
            raise LumaError(text)
        raise LumaGenerationFailedError(
            failed.id, storable_text(redact(failed.failure_reason or ""), MAX_REASON_BYTES) or None
        )
    if finished.status == "timeout":
        raise _timed_out(text, role)
    error = finished.error
    if error is not None:
        error.message = message(error.message)
        error.args = (error.message,)
        raise error
    raise LumaError(text)


def _timed_out(text: str, role: Role) -> Exception:
    """The error of a ``timeout`` ending (:data:`ROLES`)."""
    return AirflowSensorTimeout(text) if role == "sensor" else LumaWaitTimeoutError(text)
