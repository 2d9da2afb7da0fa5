"""
Luma's own Dream Machine API (``https://api.lumalabs.ai/dream-machine/v1``) as plans of calls: the
``dream-machine`` endpoint family of a connection whose ``backend`` is ``luma``.

Paths are below the connection's base URL, which already ends in ``/dream-machine/v1``
(:class:`~airflow_provider_luma.hooks.settings.LumaSettings`); the key goes as ``Authorization: Bearer``
like the AI/ML API's. No long poll: a fetch answers at once, so waits poll every ``poll_interval``
seconds (:attr:`~airflow_provider_luma.models.ApiFamily.holds` is false). Errors are ``{"detail": ...}``,
read by :mod:`.answers` like the AI/ML API's ``message``. Unlike the AI/ML API, a generation can be
cancelled (``DELETE /generations/{id}``).

Which family a generation of a connection lives in is decided here too (:func:`resolve`): a connection
reaches one backend, and a generation of the other is refused by name, never looked for in vain.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from airflow_provider_luma.create_requests import CreateRequest, dream_machine_body
from airflow_provider_luma.errors import LumaInputError
from airflow_provider_luma.hooks.answers import created_generation
from airflow_provider_luma.hooks.plans import Call, Plan
from airflow_provider_luma.hooks.settings import LumaSettings
from airflow_provider_luma.models import ApiFamily, Generation, GenerationRef, family_hint

log = logging.getLogger(__name__)

#: Luma's create (the ``lumaai`` SDK's ``generations.create``); the older ``POST /generations`` is not used.
CREATE_PATH = "/generations/video"
#: One generation: ``GET`` it, ``DELETE`` it.
GENERATIONS_PATH = "/generations"


def create_plan(request: CreateRequest) -> Plan[Generation]:
    """Create a generation on Luma's API: the request mapped to Luma's names (:func:`.dream_machine_body`)."""
    body = dream_machine_body(request)
    answer = yield Call("POST", CREATE_PATH, "creating a generation", body=body, parse=_created)
    return answer.payload


def fetch_plan(ref: GenerationRef, deadline: float | None = None, retries: int | None = None) -> Plan[Generation]:
    """Fetch one generation; answered at once (Luma's API has no long poll)."""
    answer = yield Call(
        "GET",
        _path(ref.id),
        f"fetching generation {ref.id}",
        deadline=deadline,
        parse=_generation,
        max_retries=retries,
    )
    return answer.payload


def cancel_plan(settings: LumaSettings, ref: GenerationRef, deadline: float | None = None) -> Plan[None]:
    """
    Cancel a generation: ``DELETE /generations/{id}`` on Luma's API (one call; a transient failure is
    retried like a read, and a retry that finds it gone answers 404, a
    :class:`~airflow_provider_luma.errors.LumaNotFoundError`).

    :raises LumaInputError: Before any call, on the AI/ML API, which has no cancel.
    """
    if ref.api is not ApiFamily.DREAM_MACHINE:
        raise LumaInputError(
            f"The AI/ML API has no cancel: generation {ref.id} ({ref.api} endpoints, connection "
            f"{settings.conn_id!r}) keeps rendering, and is paid for. Only a connection to Luma's own API "
            "(extra backend 'luma') can cancel its generations."
        )
    yield Call("DELETE", _path(ref.id), f"cancelling generation {ref.id}", deadline=deadline)


def cancel_unfinished_plan(settings: LumaSettings, ref: GenerationRef, deadline: float | None = None) -> Plan[bool]:
    """
    Cancel a generation unless it is finished: fetch it, and only if it is neither ``completed`` nor
    ``failed``, ``DELETE`` it (a completed video is never deleted by a kill). Whether it was cancelled.
    """
    if ref.api is ApiFamily.DREAM_MACHINE:
        generation = yield from fetch_plan(ref, deadline, retries=1)
        if generation.known_state is not None and generation.known_state.is_terminal:
            log.info("Luma generation %s is %s: not cancelling it.", ref.id, generation.state)
            return False
    yield from cancel_plan(settings, ref, deadline)
    return True


def resolve(settings: LumaSettings, ref: GenerationRef) -> GenerationRef:
    """
    ``ref`` with its family decided for this connection: on a ``luma`` backend every generation is
    ``dream-machine``; on the AI/ML API, what the ref or its id's form says, else the ``api`` extra.

    :raises LumaInputError: For a generation of the other backend (a dict that says so).
    """
    if settings.on_luma:
        if ref.api not in (None, ApiFamily.DREAM_MACHINE) or family_hint(ref.id) is not None:
            raise LumaInputError(
                f"Generation {ref.id} was made on the AI/ML API ({ref.api or family_hint(ref.id)} endpoints), but "
                f"connection {settings.conn_id!r} reaches Luma's Dream Machine API: use the AI/ML API connection "
                "it was made with."
            )
        return GenerationRef(ref.id, ApiFamily.DREAM_MACHINE)
    if ref.api is ApiFamily.DREAM_MACHINE:
        raise LumaInputError(
            f"Generation {ref.id} was made on Luma's Dream Machine API, but connection {settings.conn_id!r} reaches "
            "the AI/ML API: use a connection with the extra backend 'luma' (host https://api.lumalabs.ai)."
        )
    return ref.resolved(settings.api)


def _path(generation_id: str) -> str:
    # Ids are checked well-formed (no space, quote or bracket); a slash or '?' must still stay in the segment.
    return f"{GENERATIONS_PATH}/{quote(generation_id, safe='')}"


def _created(payload: Any) -> Generation:
    return created_generation(payload, ApiFamily.DREAM_MACHINE)


def _generation(payload: Any) -> Generation:
    return Generation.from_api(payload, api=ApiFamily.DREAM_MACHINE)
