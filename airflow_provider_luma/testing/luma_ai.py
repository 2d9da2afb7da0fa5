"""The simulator's ``luma-ai`` family: the seed's create, single fetch and multi fetch, with the 30 s long poll.

* ``POST /v2/generate/video/luma-ai/generation``: validate the body, answer 201 + generation.
* ``GET  /v2/generate/video/luma-ai/generation?generation_id=ID&state=S``: long poll, held until the state
  is S or later (queued < dreaming < completed < failed) or ``hold_seconds``. The hold parameter's name is
  the option ``single_hold_param`` (``state`` by default).
* ``GET  /v2/generate/video/luma-ai/generations?generation_ids[]=A&generation_ids=B,C&status=S``: held
  until all reached S, any failed, or the hold expires; its hold parameter is ``multi_hold_param``
  (``status`` by default, as in the service's OpenAPI schema); the answer's shape is ``multi_shape``.

Errors use the service's envelope; ``luma_ai_routes_gone`` makes every route under the prefix answer
NestJS's generic 404 (the ``gone`` middleware asks :meth:`LumaAiFamily.gone`).
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any, ClassVar

from aiohttp import web

from airflow_provider_luma.testing.family import (
    Err,
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
from airflow_provider_luma.testing.store import PRIORITY, Generation
from airflow_provider_luma.testing.video import ASPECT_RATIOS
from airflow_provider_luma.testing.wire import ENTRY_KEY, ApiError, envelope, iso

__all__ = ["API_PREFIX", "MULTI_PATH", "SINGLE_PATH", "LumaAiFamily", "validate_create"]

API_PREFIX = "/v2/generate/video/luma-ai"
SINGLE_PATH = f"{API_PREFIX}/generation"
MULTI_PATH = f"{API_PREFIX}/generations"

_MODELS = ("ray-1-6", "ray-2", "ray-flash-2")
_RESOLUTIONS = ("540p", "720p", "1080p", "4k")
_DURATIONS = ("5s", "9s")
#: The create body's fields; any other is refused.
_BODY_FIELDS = frozenset(
    {
        "prompt",
        "generation_type",
        "aspect_ratio",
        "loop",
        "keyframes",
        "callback_url",
        "model",
        "resolution",
        "duration",
    }
)


def validate_create(body: Any, check_frame: FrameCheck) -> list[dict[str, Any]]:
    """Validation errors (``[{"path", "message"}]``) of a create body; empty if valid.

    :param check_frame: Validates one keyframe (see :func:`~.family.frame_check`).
    """
    return body_errors(body, lambda checked, err: _create_rules(checked, err, check_frame))


def _create_rules(body: dict[str, Any], err: Err, check_frame: FrameCheck) -> None:
    for key in sorted(set(body) - _BODY_FIELDS)[:20]:
        err(key[:100], f"Unrecognized property '{key[:100]}'")
    check_prompt(body, err)

    def enum(name: str, values: tuple[str, ...], nullable: bool) -> None:
        if name not in body or (nullable and body[name] is None):
            return
        if not isinstance(body[name], str) or body[name] not in values:
            err(name, f"Invalid enum value. Expected {' | '.join(values)}")

    enum("generation_type", ("video",), True)
    enum("aspect_ratio", ASPECT_RATIOS, False)
    enum("model", _MODELS, False)
    enum("resolution", _RESOLUTIONS, True)
    enum("duration", _DURATIONS, True)
    if "loop" in body and not isinstance(body["loop"], bool):
        err("loop", "Expected boolean")
    cb = body.get("callback_url")
    if cb is not None and not isinstance(cb, str):
        err("callback_url", "Expected string or null")
    check_keyframes(body, err, check_frame)


class LumaAiFamily:
    """The ``luma-ai`` endpoints (see the module's docstring); a :class:`~.family.Family`."""

    name: ClassVar[str] = "luma-ai"
    endpoints: ClassVar[tuple[str, ...]] = ("create", "get", "list")

    def __init__(self, ctx: FamilyContext) -> None:
        self.ctx = ctx
        self._check_frame = frame_check(ctx.store)

    def routes(self) -> list[Route]:
        """Create (201), single fetch and multi fetch."""
        return [
            Route("POST", SINGLE_PATH, "create", self._create, ok_status=201),
            Route("GET", SINGLE_PATH, "get", self._get_one),
            Route("GET", MULTI_PATH, "list", self._get_many),
        ]

    def gone(self, path: str) -> bool:
        """Every path under the prefix, while ``luma_ai_routes_gone`` is on."""
        return bool(self.ctx.settings.luma_ai_routes_gone) and (path == API_PREFIX or path.startswith(API_PREFIX + "/"))

    def error_body(self, request: web.Request, exc: ApiError) -> Any:
        """The service's envelope."""
        return envelope(request, exc, status_code_as_string=self.ctx.settings.status_code_as_string)

    def render(self, gen: Generation, now: float) -> dict[str, Any]:
        """Luma's generation object."""
        state = gen.state_at(now)
        return {
            "id": gen.id,
            "generation_type": "video",
            "state": state,
            "failure_reason": gen.failure_reason_at(state),
            "created_at": iso(gen.created_at),
            "assets": {
                "video": self.ctx.video_url(gen) if state == "completed" else None,
                "image": None,
                "progress_video": None,
            },
            "model": gen.model,
            "request": copy.deepcopy(gen.request),
        }

    # ------------------------------------------------------------------ handlers

    async def _create(self, request: web.Request) -> web.Response:
        body = await read_create(request, lambda body: validate_create(body, self._check_frame))
        gen = self.ctx.create(str(uuid.uuid4()), body, body.get("model", "ray-2"), self.name)
        with self.ctx.store.lock:
            public = self.render(gen, time.time())
        return web.json_response(public, status=201)

    async def _get_one(self, request: web.Request) -> web.Response:
        hold_param = self.ctx.settings.single_hold_param
        check_query(request, ("generation_id", hold_param), strict=self.ctx.settings.strict_query)
        gen_id = request.query.get("generation_id")
        if not gen_id:
            raise ApiError(400, "generation_id is required")
        target = self._target_state(request, hold_param)
        gens = self._lookup([gen_id])
        await self._hold_for(request, target, gens)
        with self.ctx.store.lock:
            return web.json_response(self.render(gens[0], time.time()))

    async def _get_many(self, request: web.Request) -> web.Response:
        settings = self.ctx.settings
        hold_param = settings.multi_hold_param
        check_query(request, ("generation_ids[]", "generation_ids", hold_param), strict=settings.strict_query)
        ids: list[str] = []
        for key in ("generation_ids[]", "generation_ids"):
            for value in request.query.getall(key, []):
                ids.extend(part.strip() for part in value.split(",") if part.strip())
        ids = list(dict.fromkeys(ids))  # de-duplicate, keep order
        if not ids:
            raise ApiError(400, "generation_ids is required")
        target = self._target_state(request, hold_param)
        gens = self._lookup(ids)
        await self._hold_for(request, target, gens)
        now = time.time()
        with self.ctx.store.lock:
            items = [self.render(g, now) for g in gens]
        if settings.multi_shape == "generations":
            return web.json_response({"generations": items, "count": len(items), "has_more": False})
        if settings.multi_shape == "data":
            return web.json_response({"data": items})
        return web.json_response(items)

    # ------------------------------------------------------------------ the long poll

    def _lookup(self, ids: list[str]) -> list[Generation]:
        gens, missing = self.ctx.store.of_family(ids, self.name)
        if missing:
            shown = ", ".join(i[:100] for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ApiError(404, f"Generation not found: {shown}")
        return gens

    def _target_state(self, request: web.Request, name: str) -> str | None:
        """The long-poll target from query parameter ``name`` (None: no hold asked)."""
        if name not in request.query:
            return None
        state = request.query[name]
        if state == "failed":
            raise ApiError(400, "Cannot wait for the failed state")
        if state not in PRIORITY:
            raise ApiError(400, f"Invalid {name} '{state[:100]}'. Expected queued | dreaming | completed")
        return None if self.ctx.settings.ignore_state_param else state

    async def _hold_for(self, request: web.Request, target: str | None, gens: list[Generation]) -> None:
        """Hold until every one of ``gens`` reached ``target`` (or any failed); log how it ended."""
        entry = request[ENTRY_KEY]
        if target is None:
            entry["held"], entry["released_by"] = 0.0, "immediate"
            return

        def check(now: float) -> tuple[bool, float]:
            all_at = max(g.reached_at(target) for g in gens)
            fail_at = min(g.reached_at("failed") for g in gens)
            at = min(all_at, fail_at)
            return now >= at, at

        entry["held"], entry["released_by"] = await self.ctx.store.hold(check, self.ctx.settings.hold_seconds)
