"""What an endpoint family of the simulator is, and what the families share.

A family is one API's set of routes over the shared generation store: its routes and their endpoint names,
its request validation, its answers and its error format. Today: ``luma-ai`` (:mod:`.luma_ai`) and the
universal ``video`` family (:mod:`.universal`). The simulator registers them in one line
(``FAMILIES`` in :mod:`.simulator`); the middlewares log, fault, authenticate and render errors for any
route a family declares, by the endpoint name it gives.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from aiohttp import web

from airflow_provider_luma.testing.options import Settings
from airflow_provider_luma.testing.requestlog import record_body
from airflow_provider_luma.testing.store import Generation, Store
from airflow_provider_luma.testing.wire import ENTRY_KEY, ApiError, BodyError, parse_body

__all__ = [
    "MAX_PROMPT",
    "Family",
    "FamilyContext",
    "Route",
    "body_errors",
    "check_keyframes",
    "check_prompt",
    "check_query",
    "frame_check",
    "read_create",
    "read_json",
]

MAX_PROMPT = 2048

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Err = Callable[[str, str], None]
FrameCheck = Callable[[Any, str, Err], None]


@dataclass(frozen=True)
class Route:
    """
    One route a family serves.

    :param method: ``GET``, ``POST``, ``DELETE`` ...
    :param path: The aiohttp path (``/generations/{id}`` placeholders allowed).
    :param endpoint: Its name in the request log and for :meth:`~.LumaSimulator.inject_fault`; unique across
        families (``create``, ``video_get`` ...).
    :param handler: The aiohttp handler: validates, changes the store, answers.
    :param ok_status: What it answers on success (fault kinds that pretend success use it).
    """

    method: str
    path: str
    endpoint: str
    handler: Handler
    ok_status: int = 200


@dataclass(frozen=True)
class FamilyContext:
    """
    What a family works with.

    :param store: The generations of every family (a family sees only those tagged with its name).
    :param settings: The simulator's current options (read them at each request: they change while running).
    :param video_url: The video origin's URL of a completed generation's clip (None while not serving).
    """

    store: Store
    settings: Settings
    video_url: Callable[[Generation], str | None]

    def create(self, gen_id: str, request: dict[str, Any], model: str, family: str) -> Generation:
        """A new generation on the default timeline (the ``queued_seconds`` and ``dreaming_seconds`` options,
        then the script rules)."""
        settings = self.settings
        return self.store.create(
            gen_id, request, model, family, queued=settings.queued_seconds, dreaming=settings.dreaming_seconds
        )


class Family(Protocol):
    """
    An endpoint family of the simulator: one API's routes over the shared generation store.

    A family is a class taking a :class:`FamilyContext`. Adding one, for example Luma's own Dream Machine
    API (issue 22: base path ``/dream-machine/v1``, ``POST /generations/video`` answering 201 with a
    generation, ``GET /generations/{id}``, ``GET /generations?limit&offset`` answering
    ``{"generations", "has_more", "count"}`` newest first, ``DELETE /generations/{id}``, errors as
    ``{"detail": "..."}``, no long poll), is one module and one line:

    * a module ``dream_machine.py`` with ``class DreamMachineFamily`` whose :attr:`name` is
      ``"dream-machine"``, :attr:`endpoints` ``("dm_create", "dm_get", "dm_list", "dm_delete")``,
      :meth:`routes` the four routes (the create reads its body with :func:`read_create` and its own
      validation, then ``ctx.create(...)``; the fetches use ``ctx.store.of_family``; the delete a store
      method to add; each answers with :meth:`render`),
      :meth:`render` Luma's generation object and :meth:`error_body` ``{"detail": exc.message}``;
    * ``DreamMachineFamily`` added to ``FAMILIES`` in :mod:`.simulator`.

    Its endpoints then appear in the request log (a ``DELETE`` too), take faults, need the key and
    answer errors in its format; options only it reads go in :data:`.options.OPTIONS` with
    ``family="dream-machine"``.
    """

    #: Stored on its generations: a generation is found only by its own family's routes.
    name: ClassVar[str]
    #: Its endpoint names, in the order the docs list them.
    endpoints: ClassVar[tuple[str, ...]]

    def __init__(self, ctx: FamilyContext) -> None:
        """Made once per simulator, with what it works with."""
        ...

    def routes(self) -> list[Route]:
        """The routes it serves."""
        ...

    def render(self, gen: Generation, now: float) -> dict[str, Any]:
        """A generation as the family's fetch answers it at ``now`` (called with the store's lock held)."""
        ...

    def error_body(self, request: web.Request, exc: ApiError) -> Any:
        """The JSON body of an error answer in the family's format."""
        ...

    def gone(self, path: str) -> bool:
        """Whether ``path`` is one of its routes and they are switched off (answer the framework's 404)."""
        ...


# ---------------------------------------------------------------- shared by the families


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, logged as bounded text; a 400 ``Body validation error!`` if not acceptable."""
    raw = await request.read()
    entry = request.get(ENTRY_KEY)
    try:
        body = parse_body(raw)
    except BodyError as exc:
        record_body(entry, raw, None)
        raise ApiError(400, "Body validation error!", [{"path": "", "message": str(exc)}]) from None
    record_body(entry, raw, body)
    return body


async def read_create(request: web.Request, validate: Callable[[Any], list[dict[str, Any]]]) -> dict[str, Any]:
    """A create's body, checked by ``validate``; a 400 ``Body validation error!`` listing what it found."""
    body = await read_json(request)
    errors = validate(body)
    if errors:
        raise ApiError(400, "Body validation error!", errors)
    return dict(body)


def body_errors(body: Any, rules: Callable[[dict[str, Any], Err], None]) -> list[dict[str, Any]]:
    """Validation errors (``[{"path", "message"}]``) of a create body (empty if valid): ``rules(body, err)``
    reports each with ``err(path, message)``; a body that is not a JSON object is one error."""
    errors: list[dict[str, Any]] = []

    def err(path: str, message: str) -> None:
        errors.append({"path": path, "message": message})

    if not isinstance(body, dict):
        err("", "Expected a JSON object")
    else:
        rules(body, err)
    return errors


def check_query(request: web.Request, known: tuple[str, ...], *, strict: bool) -> None:
    """In strict mode, a 400 ``Query validation error!`` for query parameters the endpoint does not know."""
    if not strict:
        return
    unknown = [name for name in dict.fromkeys(request.query) if name not in known]
    if unknown:
        errors = [{"path": name[:200], "message": f"property {name[:200]} should not exist"} for name in unknown[:20]]
        raise ApiError(400, "Query validation error!", errors)


def check_prompt(body: dict[str, Any], err: Err) -> None:
    """The ``prompt`` rules every family shares: required, a string, at most 2048 characters."""
    prompt = body.get("prompt")
    if "prompt" not in body:
        err("prompt", "Required")
    elif not isinstance(prompt, str):
        err("prompt", "Expected string")
    elif len(prompt) > MAX_PROMPT:
        err("prompt", f"String must contain at most {MAX_PROMPT} character(s)")


def check_keyframes(body: dict[str, Any], err: Err, check_frame: FrameCheck) -> None:
    """The ``keyframes`` rules: null or ``{frame0, frame1}``, each checked by ``check_frame``."""
    keyframes = body.get("keyframes")
    if keyframes is None:
        return
    if not isinstance(keyframes, dict):
        err("keyframes", "Expected object or null")
        return
    for key in sorted(set(keyframes) - {"frame0", "frame1"}):
        err(f"keyframes.{key[:100]}", f"Unrecognized property '{key[:100]}'")
    for name in ("frame0", "frame1"):
        check_frame(keyframes.get(name), f"keyframes.{name}", err)


def frame_check(store: Store) -> FrameCheck:
    """Checks one keyframe: null, ``{"type": "image", "url"}`` or a *completed* ``{"type": "generation", "id"}``."""

    def check(frame: Any, path: str, err: Err) -> None:
        if frame is None:
            return
        if not isinstance(frame, dict):
            err(path, "Expected object or null")
            return
        kind = frame.get("type")
        if kind == "image":
            if set(frame) - {"type", "url"}:
                err(path, "Unrecognized property for an image keyframe")
            if not isinstance(frame.get("url"), str):
                err(f"{path}.url", "Expected string")
        elif kind == "generation":
            if set(frame) - {"type", "id"}:
                err(path, "Unrecognized property for a generation keyframe")
            gen_id = frame.get("id")
            if not isinstance(gen_id, str):
                err(f"{path}.id", "Expected string")
                return
            with store.lock:
                gen = store.find(gen_id)
                state = gen.state_at(time.time()) if gen else None
            if state != "completed":
                err(f"{path}.id", f"Generation {gen_id[:100]} does not exist or is not completed")
        else:
            err(f"{path}.type", "Invalid discriminator value. Expected 'image' | 'generation'")

    return check
