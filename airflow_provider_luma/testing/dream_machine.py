"""The simulator's ``dream-machine`` family: Luma's own Dream Machine API (``https://api.lumalabs.ai/dream-machine/v1``).

Served under :data:`DREAM_MACHINE_PREFIX` on the API origin, so a connection whose host is the simulator and
whose backend is Luma's reaches it exactly as it would reach ``api.lumalabs.ai``:

* ``POST /dream-machine/v1/generations/video`` (``model`` required, as in the ``lumaai`` SDK) and the older
  ``POST /dream-machine/v1/generations`` (``model`` optional: ``ray-2``): validate the body, answer **201**
  with the generation;
* ``GET /dream-machine/v1/generations/{id}``: the generation at once (**no long poll**);
* ``GET /dream-machine/v1/generations?limit=&offset=``: this family's generations, newest first, as
  ``{"generations", "has_more", "count", "limit", "offset"}`` (``limit`` 1 to 100, default 10);
* ``DELETE /dream-machine/v1/generations/{id}``: removes the generation (its fetch and its video answer 404
  from then on); **204** with no body, 404 for an id it does not have.

Generations are Luma's object (``id``, ``generation_type``, ``state`` ``queued``/``dreaming``/``completed``/
``failed``, ``failure_reason``, ``created_at``, ``assets`` ``{video, image, progress_video}``, ``model``,
``request``); ids are bare uuids. Every error is ``{"detail": "<message>"}`` (validation errors list each
problem in the one string). ``callback_url`` is checked, not called: the simulator POSTs no callbacks.
"""

from __future__ import annotations

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
from airflow_provider_luma.testing.luma_ai import luma_generation
from airflow_provider_luma.testing.store import Generation
from airflow_provider_luma.testing.video import ASPECT_RATIOS
from airflow_provider_luma.testing.wire import ENTRY_KEY, ApiError

__all__ = [
    "DREAM_MACHINE_MODELS",
    "DREAM_MACHINE_PREFIX",
    "DREAM_MACHINE_VIDEO_PATH",
    "DreamMachineFamily",
    "error_detail",
    "validate_dream_machine",
]

DREAM_MACHINE_PREFIX = "/dream-machine/v1"
DREAM_MACHINE_GENERATIONS_PATH = f"{DREAM_MACHINE_PREFIX}/generations"
DREAM_MACHINE_VIDEO_PATH = f"{DREAM_MACHINE_GENERATIONS_PATH}/video"
#: Luma's video models on the Dream Machine API (the ``lumaai`` SDK's ``model`` literal).
DREAM_MACHINE_MODELS: tuple[str, ...] = ("ray-2", "ray-flash-2", "ray-1-6")
_RESOLUTIONS = ("540p", "720p", "1080p", "4k")
_DURATIONS = ("5s", "9s")
_BODY_FIELDS = frozenset(
    {
        "prompt",
        "model",
        "generation_type",
        "aspect_ratio",
        "loop",
        "keyframes",
        "callback_url",
        "resolution",
        "duration",
        "concepts",
    }
)
#: The list's page size unless ``limit`` is given, and the most it serves.
DEFAULT_LIMIT, MAX_LIMIT = 10, 100


def validate_dream_machine(body: Any, check_frame: FrameCheck, *, model_required: bool) -> list[dict[str, Any]]:
    """Validation errors (``[{"path", "message"}]``) of a Dream Machine create body; empty if valid.

    :param check_frame: Validates one keyframe (see :func:`~.family.frame_check`).
    :param model_required: ``POST /generations/video`` needs ``model``; the older ``POST /generations`` does not.
    """
    return body_errors(body, lambda checked, err: _rules(checked, err, check_frame, model_required))


def _rules(body: dict[str, Any], err: Err, check_frame: FrameCheck, model_required: bool) -> None:
    for key in sorted(set(body) - _BODY_FIELDS)[:20]:
        err(key[:100], f"Unrecognized property '{key[:100]}'")
    check_prompt(body, err)
    if model_required and "model" not in body:
        err("model", "Required")

    def enum(name: str, values: tuple[str, ...]) -> None:
        if name in body and (not isinstance(body[name], str) or body[name] not in values):
            err(name, f"Invalid enum value. Expected {' | '.join(values)}")

    enum("model", DREAM_MACHINE_MODELS)
    enum("generation_type", ("video",))
    enum("aspect_ratio", ASPECT_RATIOS)
    enum("resolution", _RESOLUTIONS)
    enum("duration", _DURATIONS)
    if "loop" in body and not isinstance(body["loop"], bool):
        err("loop", "Expected boolean")
    if "callback_url" in body and not isinstance(body["callback_url"], str):
        err("callback_url", "Expected string")
    concepts = body.get("concepts")
    if "concepts" in body and (
        not isinstance(concepts, list)
        or not all(isinstance(c, dict) and isinstance(c.get("key"), str) for c in concepts)
    ):
        err("concepts", 'Expected a list of {"key": string}')
    check_keyframes(body, err, check_frame)


def error_detail(exc: ApiError) -> str:
    """The ``detail`` text of an error: its message, then each validation problem (bounded)."""
    if not exc.errors:
        return exc.message
    problems = "; ".join(f"{e.get('path') or 'body'}: {e.get('message')}" for e in exc.errors[:20])
    return f"{exc.message} {problems}"


def _int_param(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        top = f" and at most {high}" if high is not None else ""
        raise ApiError(400, f"{name} must be an integer at least {low}{top}, not {text[:40]!r}")
    return value


class DreamMachineFamily:
    """Luma's Dream Machine API (see the module's docstring); a :class:`~.family.Family`."""

    name: ClassVar[str] = "dream-machine"
    endpoints: ClassVar[tuple[str, ...]] = ("dm_create", "dm_get", "dm_list", "dm_delete")

    def __init__(self, ctx: FamilyContext) -> None:
        self.ctx = ctx
        self._check_frame = frame_check(ctx.store)

    def routes(self) -> list[Route]:
        """Create (both paths), fetch, list and delete."""
        return [
            Route("POST", DREAM_MACHINE_VIDEO_PATH, "dm_create", self._create_video, ok_status=201),
            Route("POST", DREAM_MACHINE_GENERATIONS_PATH, "dm_create", self._create_older, ok_status=201),
            Route("GET", DREAM_MACHINE_GENERATIONS_PATH, "dm_list", self._list),
            Route("GET", DREAM_MACHINE_GENERATIONS_PATH + "/{id}", "dm_get", self._get),
            Route("DELETE", DREAM_MACHINE_GENERATIONS_PATH + "/{id}", "dm_delete", self._delete, ok_status=204),
        ]

    def gone(self, path: str) -> bool:
        """Never: these are Luma's current routes."""
        return False

    def error_body(self, request: web.Request, exc: ApiError) -> Any:
        """Luma's error format: ``{"detail": "..."}``."""
        return {"detail": error_detail(exc)}

    def render(self, gen: Generation, now: float) -> dict[str, Any]:
        """Luma's generation object."""
        return luma_generation(self.ctx, gen, now)

    # ------------------------------------------------------------------ handlers

    async def _create_video(self, request: web.Request) -> web.Response:
        return await self._create(request, model_required=True)

    async def _create_older(self, request: web.Request) -> web.Response:
        return await self._create(request, model_required=False)

    async def _create(self, request: web.Request, *, model_required: bool) -> web.Response:
        body = await read_create(
            request, lambda body: validate_dream_machine(body, self._check_frame, model_required=model_required)
        )
        gen = self.ctx.create(str(uuid.uuid4()), body, body.get("model", "ray-2"), self.name)
        with self.ctx.store.lock:
            public = self.render(gen, time.time())
        return web.json_response(public, status=201)

    def _find(self, gen_id: str) -> Generation:
        gens, missing = self.ctx.store.of_family([gen_id], self.name)
        if missing:
            raise ApiError(404, "Generation not found")
        return gens[0]

    async def _get(self, request: web.Request) -> web.Response:
        check_query(request, (), strict=self.ctx.settings.strict_query)
        with self.ctx.store.lock:
            answer = self.render(self._find(request.match_info["id"]), time.time())
        request[ENTRY_KEY]["released_by"] = "immediate"  # never held
        return web.json_response(answer)

    async def _list(self, request: web.Request) -> web.Response:
        check_query(request, ("limit", "offset"), strict=self.ctx.settings.strict_query)
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_param(request, "offset", 0, 0, None)
        now = time.time()
        with self.ctx.store.lock:
            # Newest first; the store keeps creation order, so reversed is newest first.
            mine = [g for g in reversed(self.ctx.store.all()) if g.family == self.name]
            page = [self.render(g, now) for g in mine[offset : offset + limit]]
        request[ENTRY_KEY]["released_by"] = "immediate"
        answer = {
            "generations": page,
            "has_more": offset + len(page) < len(mine),
            "count": len(page),
            "limit": limit,
            "offset": offset,
        }
        return web.json_response(answer)

    async def _delete(self, request: web.Request) -> web.Response:
        check_query(request, (), strict=self.ctx.settings.strict_query)
        gen_id = request.match_info["id"]
        with self.ctx.store.lock:
            self._find(gen_id)
            self.ctx.store.delete(gen_id)
        return web.Response(status=204)
