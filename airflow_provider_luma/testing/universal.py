"""The simulator's universal ``video`` family: the service's current API for Luma's models.

* ``POST /v2/video/generations`` with ``model`` and ``prompt`` (plus the model's own fields: ``luma/ray-2``,
  ``luma/ray-flash-2``, ``luma/ray-3.2``, ``luma/ray-1-6``; any other ``luma/...`` model is accepted
  unchecked): answer 200 ``{"id": "<uuid>:<model>", "status"}`` (the id's key is ``universal_id_field``;
  ``universal_id_suffix`` off: bare uuids).
* ``GET /v2/video/generations?generation_id=ID``: at once, never held: ``{"id", "status", "video": {"url"} |
  null, "error": {"name", "message"} | null, "meta": {"usage": {"credits_used", "usd_spent"}} | null,
  "model"}``; status words ``queued``, ``generating``, ``completed``, ``error`` unless
  ``universal_status_words``.

Validation and rendering are pure functions over plain data; :class:`UniversalFamily` adds the routes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from aiohttp import web

from airflow_provider_luma.testing.family import (
    FamilyContext,
    FrameCheck,
    Route,
    body_errors,
    check_keyframes,
    check_prompt,
    check_query,
    frame_check,
    read_create,
)
from airflow_provider_luma.testing.store import Generation
from airflow_provider_luma.testing.video import ASPECT_RATIOS
from airflow_provider_luma.testing.wire import ENTRY_KEY, ApiError, envelope

__all__ = [
    "DEFAULT_STATUS_WORDS",
    "UNIVERSAL_MODELS",
    "UNIVERSAL_PATH",
    "UniversalFamily",
    "render_universal",
    "usage_for",
    "validate_universal",
]

UNIVERSAL_PATH = "/v2/video/generations"

#: Simulator state -> the ``status`` word the universal fetch answers.
DEFAULT_STATUS_WORDS: dict[str, str] = {
    "queued": "queued",
    "dreaming": "generating",
    "completed": "completed",
    "failed": "error",
}

_RAY2_ASPECT_RATIOS = ASPECT_RATIOS
_RAY2_RESOLUTIONS = ("540p", "720p", "1080p", "4k")
_RAY3_ASPECT_RATIOS = ("9:16", "3:4", "1:1", "4:3", "16:9", "21:9")
_RAY3_RESOLUTIONS = ("360p", "540p", "720p", "1080p")
_RAY3_TYPES = ("video", "video_edit", "video_reframe")

#: Known models and the fields each accepts besides ``model`` and ``prompt``.
UNIVERSAL_MODELS: dict[str, frozenset[str]] = {
    "luma/ray-2": frozenset({"aspect_ratio", "resolution", "duration", "loop", "keyframes"}),
    "luma/ray-flash-2": frozenset({"aspect_ratio", "resolution", "duration", "loop", "keyframes"}),
    "luma/ray-3.2": frozenset(
        {
            "type",
            "resolution",
            "duration",
            "aspect_ratio",
            "loop",
            "hdr",
            "exr_export",
            "image_url",
            "last_image_url",
            "video_url",
        }
    ),
    "luma/ray-1-6": frozenset({"aspect_ratio", "loop", "keyframes"}),
}

# Credits and dollars per second of video: deterministic, so tests can assert on them.
_CREDITS_PER_SECOND = 20_000
_USD_PER_SECOND = 0.1

Err = Callable[[str, str], None]


def _duration(value: Any) -> int | None:
    """An integer duration from ``5`` or ``"5"`` (``None`` if neither; bools are not ints)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def validate_universal(body: Any, check_frame: FrameCheck) -> list[dict[str, Any]]:
    """Validation errors (``[{"path", "message"}]``) of a universal create body; empty if valid.

    :param check_frame: Validates one keyframe (``frame0``/``frame1``) the way the
        ``luma-ai`` create does: ``check_frame(frame, path, err)``.
    """
    return body_errors(body, lambda checked, err: _universal_rules(checked, err, check_frame))


def _universal_rules(body: dict[str, Any], err: Err, check_frame: FrameCheck) -> None:
    check_prompt(body, err)
    model = body.get("model")
    if "model" not in body:
        err("model", "Required")
        return
    if not isinstance(model, str):
        err("model", "Expected string")
        return
    allowed = UNIVERSAL_MODELS.get(model)
    if allowed is None:
        if not model.startswith("luma/"):
            err("model", f"Invalid enum value. Expected {' | '.join(UNIVERSAL_MODELS)}, received '{model[:100]}'")
        # A luma/ model newer than this simulator: accept whatever it is sent.
        return
    for key in sorted(set(body) - allowed - {"model", "prompt"})[:20]:
        err(key[:100], f"Unrecognized property '{key[:100]}' for model {model}")

    def enum(name: str, values: tuple[str, ...]) -> None:
        if name in body and (not isinstance(body[name], str) or body[name] not in values):
            err(name, f"Invalid enum value. Expected {' | '.join(values)}")

    def boolean(name: str) -> None:
        if name in body and not isinstance(body[name], bool):
            err(name, "Expected boolean")

    def string(name: str) -> None:
        if name in body and not isinstance(body[name], str):
            err(name, "Expected string")

    def duration(values: tuple[int, ...]) -> None:
        if "duration" in body and _duration(body["duration"]) not in values:
            err("duration", f"Invalid enum value. Expected {' | '.join(map(str, values))}")

    boolean("loop")
    if model == "luma/ray-3.2":
        enum("type", _RAY3_TYPES)
        enum("resolution", _RAY3_RESOLUTIONS)
        enum("aspect_ratio", _RAY3_ASPECT_RATIOS)
        duration((5, 10))
        for name in ("hdr", "exr_export"):
            boolean(name)
        for name in ("image_url", "last_image_url", "video_url"):
            string(name)
        _ray3_rules(body, err)
        return
    enum("aspect_ratio", _RAY2_ASPECT_RATIOS)
    if "resolution" in allowed:
        enum("resolution", _RAY2_RESOLUTIONS)
    if "duration" in allowed:
        duration((5, 9))
    check_keyframes(body, err, check_frame)


def _ray3_rules(body: dict[str, Any], err: Err) -> None:
    """Ray 3.2's rules across fields (defaults: type video, 5 s, 720p)."""
    if body.get("type", "video") in ("video_edit", "video_reframe") and not body.get("video_url"):
        err("video_url", f"video_url is required when type is {body['type']}")
    if body.get("hdr") is True:
        if _duration(body.get("duration", 5)) != 5:
            err("hdr", "hdr is only available for 5 s videos")
        if body.get("resolution", "720p") not in ("720p", "1080p"):
            err("hdr", "hdr is only available at 720p or 1080p")
    if body.get("exr_export") is True and body.get("hdr") is not True:
        err("exr_export", "exr_export requires hdr")


def usage_for(request: Mapping[str, Any]) -> dict[str, Any]:
    """``meta.usage`` of a completed generation: proportional to its duration (default 5 s)."""
    seconds = _duration(request.get("duration", 5)) or 5
    return {"credits_used": seconds * _CREDITS_PER_SECOND, "usd_spent": round(seconds * _USD_PER_SECOND, 4)}


def render_universal(
    *,
    generation_id: str,
    model: str,
    state: str,
    failure_reason: str | None,
    video_url: str | None,
    request: Mapping[str, Any],
    words: Mapping[str, str],
) -> dict[str, Any]:
    """The universal fetch's answer for a generation at ``state``."""
    return {
        "id": generation_id,
        "status": words.get(state, state),
        "video": {"url": video_url} if state == "completed" and video_url else None,
        "error": {"name": "GenerationError", "message": failure_reason or "Generation failed"}
        if state == "failed"
        else None,
        "meta": {"usage": usage_for(request)} if state == "completed" else None,
        "model": model,
    }


class UniversalFamily:
    """The universal ``/v2/video/generations`` endpoints (see the module's docstring); a :class:`~.family.Family`."""

    name: ClassVar[str] = "universal"
    endpoints: ClassVar[tuple[str, ...]] = ("video_create", "video_get")

    def __init__(self, ctx: FamilyContext) -> None:
        self.ctx = ctx
        self._check_frame = frame_check(ctx.store)

    def routes(self) -> list[Route]:
        """Create and fetch."""
        return [
            Route("POST", UNIVERSAL_PATH, "video_create", self._create),
            Route("GET", UNIVERSAL_PATH, "video_get", self._get),
        ]

    def gone(self, path: str) -> bool:
        """Never: the universal routes are the service's current API."""
        return False

    def error_body(self, request: web.Request, exc: ApiError) -> Any:
        """The service's envelope."""
        return envelope(request, exc, status_code_as_string=self.ctx.settings.status_code_as_string)

    def status_words(self) -> dict[str, str]:
        """State -> status word, with the ``universal_status_words`` overrides."""
        return {**DEFAULT_STATUS_WORDS, **(self.ctx.settings.universal_status_words or {})}

    def render(self, gen: Generation, now: float) -> dict[str, Any]:
        """The universal fetch's answer."""
        state = gen.state_at(now)
        return render_universal(
            generation_id=gen.id,
            model=gen.model,
            state=state,
            failure_reason=gen.failure_reason_at(state),
            video_url=self.ctx.video_url(gen),
            request=gen.request,
            words=self.status_words(),
        )

    async def _create(self, request: web.Request) -> web.Response:
        body = await read_create(request, lambda body: validate_universal(body, self._check_frame))
        settings = self.ctx.settings
        model = body["model"]
        raw_id = str(uuid.uuid4())
        gen = self.ctx.create(f"{raw_id}:{model}" if settings.universal_id_suffix else raw_id, body, model, self.name)
        with self.ctx.store.lock:
            state = gen.state_at(time.time())
        status = self.status_words().get(state, state)
        return web.json_response({settings.universal_id_field: gen.id, "status": status}, status=200)

    async def _get(self, request: web.Request) -> web.Response:
        check_query(request, ("generation_id",), strict=self.ctx.settings.strict_query)
        gen_id = request.query.get("generation_id")
        if not gen_id:
            errors = [{"path": "generation_id", "message": "generation_id should not be empty"}]
            raise ApiError(400, "Query validation error!", errors)
        with self.ctx.store.lock:
            gen = self.ctx.store.get(gen_id)
            if gen is None or gen.family != self.name:
                raise ApiError(404, "Generation not found")
            answer = self.render(gen, time.time())
        request[ENTRY_KEY]["released_by"] = "immediate"  # never held
        return web.json_response(answer)
