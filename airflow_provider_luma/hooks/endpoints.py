"""
The endpoint families: paths, query spellings and answers, as plans of calls.

The AI/ML API's ``luma-ai`` (the seed's, with the 30 s long poll) and ``video`` (the universal
endpoint, no hold) are here; Luma's own ``dream-machine`` (no hold, with cancel) is in
:mod:`.dream_machine`, and the plans here hand its generations over to it.
Two things are learned once per process and base URL, because the service's documents disagree
with themselves or the service has moved on:

* which query name makes each ``luma-ai`` fetch hold (``state`` or ``status``): :class:`HoldParameter`;
* whether the ``luma-ai`` routes exist at all: when they answer the framework's generic 404, a
  create falls back to the universal endpoint (a route 404 created nothing, so it cannot pay twice).

And one chunking rule, for both paths (:func:`fetch_plans`): universal generations one call each,
``luma-ai`` ones one call per ``ids_per_request`` ids, **every call held at once** (the drivers run
the plans side by side: threads in a worker, tasks on an event loop), so a poll of many ids takes one
hold, not one per chunk. Only this module and :mod:`airflow_provider_luma.waiting` decide pacing,
chunking and what a missing answer means.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from airflow_provider_luma import outcome
from airflow_provider_luma.create_requests import CreateRequest, to_universal
from airflow_provider_luma.errors import LumaRouteNotFoundError, LumaValidationError
from airflow_provider_luma.hooks import dream_machine
from airflow_provider_luma.hooks.answers import created_generation
from airflow_provider_luma.hooks.plans import Answer, Call, Plan
from airflow_provider_luma.hooks.settings import LumaSettings
from airflow_provider_luma.models import (
    ApiFamily,
    Generation,
    GenerationRef,
    GenerationState,
    parse_generation_list,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

LUMA_AI_GENERATION_PATH = "/v2/generate/video/luma-ai/generation"
LUMA_AI_GENERATIONS_PATH = "/v2/generate/video/luma-ai/generations"
VIDEO_GENERATIONS_PATH = "/v2/video/generations"
#: A well-formed id no generation can have: fetching it costs nothing and tells whether the key works.
PROBE_GENERATION_ID = "00000000-0000-4000-8000-000000000000"
#: An answer sooner than this share of the server's hold, with nothing at the target, was not held.
EARLY_ANSWER_SHARE = 0.5
#: The long-poll parameter the service's OpenAPI schema names for each fetch (the seed says ``state`` for both).
SCHEMA_HOLD_NAMES = {"single": "state", "multi": "status"}


class HoldParameter:
    """
    Which query name makes one kind of ``luma-ai`` fetch ("single" or "multi") of one server hold.

    Starts with the name the schema gives; moves to the other when the server rejects the name
    (a 400 naming it: strict validation) or answers far sooner than its hold with nothing at the
    target (lenient: it ignored the name). Once a poll is seen held, the name is settled. When
    neither name holds, it sends none, and waits poll at ``min_poll_interval``.
    """

    def __init__(self, base_url: str, kind: str) -> None:
        self.base_url = base_url
        self.kind = kind
        first = SCHEMA_HOLD_NAMES[kind]
        self.candidates = [first, "status" if first == "state" else "state"]
        self.index = 0
        self.settled = False
        self._lock = threading.Lock()

    @property
    def name(self) -> str | None:
        """The name to send now; ``None`` once neither works."""
        return self.candidates[self.index] if self.index < len(self.candidates) else None

    def rejected(self, name: str) -> bool:
        """The server refused ``name`` (400): move on; whether the poll should be asked again (without it)."""
        self._move_past(name, "rejected it")
        return self.name != name

    def observed(self, name: str, seconds: float, reached: bool, hold: float) -> None:
        """A poll sent with ``name`` answered after ``seconds``; ``reached``: something was at the target."""
        if self.settled or name != self.name:
            return
        if seconds >= hold * EARLY_ANSWER_SHARE:
            self.settled = True
            log.info("The Luma API at %s holds the %s fetch on %r.", self.base_url, self.kind, name)
        elif not reached:
            self._move_past(name, f"answered after {seconds:.1f} s of a {hold:.0f} s hold")

    def _move_past(self, name: str, why: str) -> None:
        with self._lock:
            if self.settled or name != self.name:
                return
            self.index += 1
            following = self.name
        if following is not None:
            log.info(
                "The Luma API at %s ignores %r on the %s fetch (%s): asking with %r.",
                self.base_url,
                name,
                self.kind,
                why,
                following,
            )
        else:
            log.warning(
                "The Luma API at %s holds the %s fetch on neither 'state' nor 'status' (%s): polling every "
                "min_poll_interval seconds instead of long-polling.",
                self.base_url,
                self.kind,
                why,
            )


class _Pinned(HoldParameter):
    """A name the connection pins: never changed (``none``: no hold parameter at all)."""

    def __init__(self, base_url: str, kind: str, name: str) -> None:
        super().__init__(base_url, kind)
        self.candidates = [] if name == "none" else [name]
        self.settled = True

    def rejected(self, name: str) -> bool:
        return False


_HOLD_PARAMETERS: dict[tuple[str, str], HoldParameter] = {}
_GONE_LUMA_AI: set[str] = set()
_REGISTRY_LOCK = threading.Lock()


def hold_parameter(settings: LumaSettings, kind: str) -> HoldParameter:
    """What this process knows of the hold parameter of ``kind`` ("single"/"multi") at the connection's server."""
    pinned = settings.single_hold_param if kind == "single" else settings.multi_hold_param
    if pinned is not None:
        return _Pinned(settings.base_url, kind, pinned)
    with _REGISTRY_LOCK:
        key = (settings.base_url, kind)
        if key not in _HOLD_PARAMETERS:
            _HOLD_PARAMETERS[key] = HoldParameter(settings.base_url, kind)
        return _HOLD_PARAMETERS[key]


def luma_ai_gone(settings: LumaSettings) -> bool:
    """Whether this process has seen the server answer that it has no ``luma-ai`` routes."""
    return settings.base_url in _GONE_LUMA_AI


def _mark_luma_ai_gone(settings: LumaSettings) -> None:
    if settings.base_url not in _GONE_LUMA_AI:
        _GONE_LUMA_AI.add(settings.base_url)
        log.warning(
            "The Luma API at %s no longer serves the luma-ai endpoints: new generations go to the universal "
            "endpoint (/v2/video/generations) with the equivalent model.",
            settings.base_url,
        )


def forget_learned_behaviour() -> None:
    """Forget hold names and gone routes learned so far (for tests, and after a server change)."""
    with _REGISTRY_LOCK:
        _HOLD_PARAMETERS.clear()
        _GONE_LUMA_AI.clear()


# -- create ------------------------------------------------------------------------------------


def create_plan(settings: LumaSettings, request: CreateRequest) -> Plan[Generation]:
    """
    Create a generation in the request's family; falls back to the universal endpoint if ``luma-ai`` is
    gone. On a ``luma`` backend, on Luma's API, whatever the request's family (:mod:`.dream_machine`).
    """
    if settings.on_luma:
        return (yield from dream_machine.create_plan(request))
    if request.api is ApiFamily.LUMA_AI and not luma_ai_gone(settings):
        try:
            answer = yield Call(
                "POST", LUMA_AI_GENERATION_PATH, "creating a generation", body=request.body, parse=_created_luma_ai
            )
            return answer.payload
        except LumaRouteNotFoundError:
            _mark_luma_ai_gone(settings)
    if request.api is ApiFamily.LUMA_AI:
        request = to_universal(request)
    answer = yield Call(
        "POST", VIDEO_GENERATIONS_PATH, "creating a generation", body=request.body, parse=_created_video
    )
    return answer.payload


def _created_luma_ai(payload: Any) -> Generation:
    return created_generation(payload, ApiFamily.LUMA_AI)


def _created_video(payload: Any) -> Generation:
    return created_generation(payload, ApiFamily.VIDEO)


# -- fetch -------------------------------------------------------------------------------------


def fetch_plan(
    settings: LumaSettings,
    ref: GenerationRef,
    target: GenerationState | None = None,
    deadline: float | None = None,
    retries: int | None = None,
) -> Plan[Generation]:
    """
    Fetch one generation of ``ref``'s family (``luma-ai`` when unknown); a ``luma-ai`` one with
    ``target`` is a long poll, a universal one answers at once.

    :param retries: Retries of the call instead of the connection's (see :class:`~.plans.Call`).
    """
    what = f"fetching generation {ref.id}"
    if ref.api is ApiFamily.DREAM_MACHINE:
        return (yield from dream_machine.fetch_plan(ref, deadline, retries))
    if ref.api is ApiFamily.VIDEO:
        answer = yield Call(
            "GET",
            VIDEO_GENERATIONS_PATH,
            what,
            params={"generation_id": ref.id},
            deadline=deadline,
            parse=_video_generation,
            max_retries=retries,
        )
        return answer.payload
    (generation,) = yield from _luma_ai_single_fetch(settings, ref, target, deadline, retries)
    return generation


def _luma_ai_single_fetch(
    settings: LumaSettings,
    ref: GenerationRef,
    target: GenerationState | None,
    deadline: float | None,
    retries: int | None,
) -> Plan[list[Generation]]:
    """One ``luma-ai`` generation by the single fetch, as a one-item list (what :func:`fetch_plans` runs)."""
    return _luma_ai_fetch(
        settings, "single", [ref.id], target, deadline, params=[("generation_id", ref.id)], retries=retries
    )


def fetch_many_plan(
    settings: LumaSettings,
    refs: Sequence[GenerationRef],
    target: GenerationState | None = None,
    deadline: float | None = None,
    retries: int | None = None,
) -> Plan[list[Generation]]:
    """Fetch up to ``ids_per_request`` ``luma-ai`` generations in one multi-fetch call (a long poll with ``target``)."""
    ids = [ref.id for ref in refs]
    params = (
        [("generation_ids", ",".join(ids))]
        if settings.comma_separated_ids
        else [("generation_ids[]", generation_id) for generation_id in ids]
    )
    return (yield from _luma_ai_fetch(settings, "multi", ids, target, deadline, params=params, retries=retries))


def fetch_plans(
    settings: LumaSettings,
    refs: Sequence[GenerationRef],
    target: GenerationState | None = None,
    deadline: float | None = None,
    retries: int | None = None,
) -> list[Plan[list[Generation]]]:
    """
    The chunking rule: the plans that fetch ``refs`` (families decided), to be run at once. Universal
    and Dream Machine generations one call each, never held; ``luma-ai`` ones one single fetch for one id, else one
    multi-fetch per ``ids_per_request`` ids, **each** held for ``target`` when given.
    """
    plans: list[Plan[list[Generation]]] = []
    luma_ai = [ref for ref in refs if ref.api in (None, ApiFamily.LUMA_AI)]
    for ref in refs:
        if ref.api not in (None, ApiFamily.LUMA_AI):
            plans.append(_listed(fetch_plan(settings, ref, None, deadline, retries)))
    if len(luma_ai) == 1:
        # The plan itself, not one wrapped in two more: a held poll keeps one generator frame alive, not three.
        plans.append(_luma_ai_single_fetch(settings, luma_ai[0], target, deadline, retries))
    elif luma_ai:
        plans.extend(
            fetch_many_plan(settings, chunk, target, deadline, retries)
            for chunk in chunks(luma_ai, settings.ids_per_request)
        )
    return plans


def _listed(plan: Plan[Generation]) -> Plan[list[Generation]]:
    return [(yield from plan)]


def _luma_ai_fetch(
    settings: LumaSettings,
    kind: str,
    ids: list[str],
    target: GenerationState | None,
    deadline: float | None,
    *,
    params: list[tuple[str, str]],
    retries: int | None = None,
) -> Plan[list[Generation]]:
    path = LUMA_AI_GENERATION_PATH if kind == "single" else LUMA_AI_GENERATIONS_PATH
    what = f"fetching generation{'s' if len(ids) > 1 else ''} {', '.join(ids)}"
    hold = hold_parameter(settings, kind) if target is not None else None
    parse = _luma_ai_generation if kind == "single" else _luma_ai_generation_list
    while True:
        name = hold.name if hold is not None else None
        query = params + ([(name, target.value)] if name is not None and target is not None else [])
        try:
            answer: Answer = yield Call(
                "GET",
                path,
                what,
                params=query,
                deadline=deadline,
                parse=parse,
                max_retries=retries,
                held=name is not None and target is not None,
            )
        except LumaValidationError as error:
            if hold is None or name is None or not _names(error, name) or not hold.rejected(name):
                raise
            continue  # a strict server refused the name: the same poll with the next one (or none)
        except LumaRouteNotFoundError as error:
            _mark_luma_ai_gone(settings)
            raise LumaRouteNotFoundError(
                f"The Luma API at {outcome.safe_url(settings.base_url)} no longer serves the luma-ai endpoints "
                f"({error.message}): "
                f"generation(s) {', '.join(ids)} were created there and can no longer be fetched.",
                http_status=error.http_status,
            ) from None
        break
    generations: list[Generation] = answer.payload
    if hold is not None and name is not None and target is not None:
        reached = any(g.has_reached(target) or g.is_failed for g in generations)
        hold.observed(name, answer.seconds, reached, settings.long_poll_hold)
    return generations


def _video_generation(payload: Any) -> Generation:
    return Generation.from_api(payload, api=ApiFamily.VIDEO)


def _luma_ai_generation(payload: Any) -> list[Generation]:
    return [Generation.from_api(payload, api=ApiFamily.LUMA_AI)]


def _luma_ai_generation_list(payload: Any) -> list[Generation]:
    return parse_generation_list(payload, api=ApiFamily.LUMA_AI)


def _names(error: LumaValidationError, name: str) -> bool:
    return bool(error.server_message and re.search(rf"\b{re.escape(name)}\b", error.server_message))


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
