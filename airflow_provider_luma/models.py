"""The small typed model of the Luma API: endpoint families, states, generations and ids."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from airflow_provider_luma import outcome
from airflow_provider_luma.errors import LumaInputError, LumaResponseError

log = logging.getLogger(__name__)

#: Keys of an API answer never stored (XCom, trigger events): the echo of our own request, whose
#: callback and keyframe URLs are often pre-signed. Only this key: other stored summaries may come.
UNSTORED_KEYS = frozenset({"request"})
#: All a compact generation (a trigger event's) carries: the parsed fields and two short API ones
#: (defined, with their bounds, in :data:`airflow_provider_luma.outcome.EVENT_FIELDS`).
EVENT_KEYS = (*outcome.EVENT_FIELDS, "usage")
#: Most characters of a generation id, anywhere (ids given, ids answered by a create).
MAX_ID_LENGTH = 128
#: Characters no id has, but a Python list or dict rendered as text does (``"['a', 'b']"``).
_RENDERED_OBJECT_CHAR = re.compile(r"['\"\[\](){}]")
#: What an id may not hold: a space or a rendered object's character (each wait checks its ids, once per ref).
_NOT_IN_ID = re.compile(r"[\s'\"\[\](){}]")


class ApiFamily(StrEnum):
    """
    The families of video endpoints; a generation lives in the one that created it.

    ``luma-ai``: the AI/ML API's ``/v2/generate/video/luma-ai/...``, the seed's endpoints, with the 30 s
    long poll. ``video``: the AI/ML API's ``/v2/video/generations``, the universal endpoint of the
    service's current models (``luma/ray-2``, ``luma/ray-3.2`` ...), which answers at once and is polled
    on an interval. ``dream-machine``: Luma's own API (``https://api.lumalabs.ai/dream-machine/v1``),
    reached by a connection whose ``backend`` is ``luma``; it answers at once and can cancel.
    """

    LUMA_AI = "luma-ai"
    VIDEO = "video"
    DREAM_MACHINE = "dream-machine"

    @property
    def holds(self) -> bool:
        """Whether this family's fetch can hold a request until a state is reached (a long poll)."""
        return self is ApiFamily.LUMA_AI

    @classmethod
    def parse(cls, value: Any, *, parameter: str = "api") -> ApiFamily:
        """Return the family named by ``value`` or raise :class:`LumaInputError` saying what exists."""
        try:
            return cls(str(value.value if isinstance(value, ApiFamily) else value).strip().lower())
        except ValueError:
            allowed = ", ".join(repr(f.value) for f in cls)
            raise LumaInputError(f"{parameter}={value!r} is not an endpoint family: use one of {allowed}.") from None


class GenerationState(StrEnum):
    """
    The states of a Luma generation, in the API's priority order.

    A long poll for a state answers once the generation reaches it or any later one; ``failed``
    is the last and is never "reaching" a target, it ends every wait.
    """

    QUEUED = "queued"
    DREAMING = "dreaming"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def priority(self) -> int:
        """Position in the API's order: queued 0, dreaming 1, completed 2, failed 3."""
        return _PRIORITY[self]

    @property
    def is_terminal(self) -> bool:
        """Whether the generation can change no more."""
        return self in (GenerationState.COMPLETED, GenerationState.FAILED)

    def has_reached(self, target: GenerationState) -> bool:
        """Whether a generation in this state has reached ``target`` or a later non-failed state."""
        return self is not GenerationState.FAILED and self.priority >= target.priority

    @property
    def following(self) -> GenerationState:
        """The state after this one on the way to ``completed`` (``completed`` and ``failed``: themselves)."""
        return _FOLLOWING.get(self, self)

    @classmethod
    def waitable(cls, value: str | GenerationState) -> GenerationState:
        """
        Return the state to wait for, or raise :class:`LumaInputError` saying what is allowed.

        :param value: A state name such as ``"completed"``.
        """
        try:
            state = cls(str(value.value if isinstance(value, GenerationState) else value).strip().lower())
        except ValueError:
            allowed = ", ".join(s.value for s in WAITABLE_STATES)
            raise LumaInputError(f"Unknown Luma generation state {value!r}: wait for one of {allowed}.") from None
        if state is cls.FAILED:
            raise LumaInputError(
                "A wait cannot target 'failed' (the API refuses it): wait for 'completed'; "
                "a failed generation ends that wait with its failure reason."
            )
        return state


_PRIORITY = {state: index for index, state in enumerate(GenerationState)}
_FOLLOWING = {GenerationState.QUEUED: GenerationState.DREAMING, GenerationState.DREAMING: GenerationState.COMPLETED}
WAITABLE_STATES = (GenerationState.QUEUED, GenerationState.DREAMING, GenerationState.COMPLETED)
#: Every word either family was seen or documented to use, mapped to ours. The universal endpoint
#: says ``generating`` and ``error``; its examples also treat ``waiting`` and ``active`` as running.
STATE_WORDS: Mapping[str, GenerationState] = {
    "queued": GenerationState.QUEUED,
    "waiting": GenerationState.QUEUED,
    "pending": GenerationState.QUEUED,
    "dreaming": GenerationState.DREAMING,
    "generating": GenerationState.DREAMING,
    "active": GenerationState.DREAMING,
    "processing": GenerationState.DREAMING,
    "completed": GenerationState.COMPLETED,
    "failed": GenerationState.FAILED,
    "error": GenerationState.FAILED,
}
_warned_unknown_states: set[str] = set()


def parse_state(value: Any) -> GenerationState | None:
    """Map either family's state word to a :class:`GenerationState`; an invented one is ``None`` (not terminal)."""
    if isinstance(value, GenerationState):
        return value
    state = STATE_WORDS.get(value) if isinstance(value, str) else None  # the usual case: a word as it is
    if state is not None:
        return state
    state = STATE_WORDS.get(str(value).strip().lower())
    if state is None and str(value) not in _warned_unknown_states:
        _warned_unknown_states.add(str(value))
        log.warning("The Luma API reported an unknown state %r: treating it as not finished.", value)
    return state


#: A universal id names its model after a colon, e.g. ``7c880e75-...:luma/ray-2``: a hint, not a rule.
_UNIVERSAL_ID_SUFFIX = re.compile(r"^[^:/\s]+:[\w.-]+/[\w.:-]+$")


def family_hint(generation_id: str) -> ApiFamily | None:
    """The family an id's own form points to (``<uuid>:luma/ray-2`` is universal), or ``None`` for a bare id."""
    return ApiFamily.VIDEO if _UNIVERSAL_ID_SUFFIX.match(generation_id) else None


def created_seconds(created_at: str | None) -> float | None:
    """
    UNIX time of an API ``created_at`` (ISO-8601, or epoch seconds or milliseconds), ``None`` if unreadable.

    A time without a zone is taken as UTC.
    """
    if created_at is None:
        return None
    text = str(created_at).strip()
    try:
        number = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(number) or number <= 0:
        return None
    return number / 1000 if number > 1e11 else number


@dataclass(frozen=True)
class Generation:
    """
    One Luma generation as the API reported it, in either family's words.

    :param id: The generation id.
    :param state: The state in this provider's words (``queued``, ``dreaming``, ``completed``,
        ``failed``) when the API's word is known; otherwise the API's own word; ``None`` if it sent none.
    :param failure_reason: Why the generation failed, when it did.
    :param video_url: Where the finished video can be downloaded (a CDN, not the API).
    :param created_at: The creation time as the API wrote it (ISO-8601).
    :param api: The endpoint family the generation lives in (``None``: not known from the answer).
    :param usage: What it cost, as the universal endpoint reports it (``credits_used``, ``usd_spent``).
    :param raw: The whole JSON object the API returned.
    """

    id: str
    state: str | None = None
    failure_reason: str | None = None
    video_url: str | None = None
    created_at: str | None = None
    api: ApiFamily | None = None
    usage: Mapping[str, Any] | None = field(default=None, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def known_state(self) -> GenerationState | None:
        """The state as a :class:`GenerationState`, ``None`` when missing or unknown (read once: a wait asks often)."""
        return parse_state(self.state) if self.state is not None else None

    @property
    def is_failed(self) -> bool:
        """Whether the generation failed."""
        return self.known_state is GenerationState.FAILED

    def has_reached(self, target: GenerationState) -> bool:
        """Whether the generation reached ``target`` or a later non-failed state."""
        state = self.known_state
        return state is not None and state.has_reached(target)

    @property
    def ref(self) -> GenerationRef:
        """The id and family, all a later call needs to find this generation again."""
        return GenerationRef(self.id, self.api)

    @classmethod
    def from_api(cls, payload: Any, *, api: ApiFamily | None = None) -> Generation:
        """
        Build a generation from any shape either family (or a wrapper of it) is known to return.

        Also accepts what :meth:`to_dict` produced. Raises :class:`LumaResponseError` when the
        payload is not an object with an id (``id``, or ``generation_id`` as the service's SDK reads it).

        :param payload: The JSON object.
        :param api: The family the answer came from; a ``to_dict`` payload carries its own.
        """
        if not isinstance(payload, Mapping):
            raise LumaResponseError(
                f"The Luma API returned {type(payload).__name__} where a generation object was expected."
            )
        generation_id = next(
            (v for v in (payload.get("generation_id"), payload.get("id")) if isinstance(v, str) and v.strip()), None
        )
        if generation_id is None:
            raise LumaResponseError("The Luma API returned a generation without an id.")
        word = payload.get("state") if payload.get("state") is not None else payload.get("status")
        # Text read from an answer is made valid UTF-8 and bounded once, here: it is logged and quoted.
        state = None if word is None else outcome.storable_text(str(word), 64)
        known = parse_state(state) if state is not None else None
        created_at = payload.get("created_at")
        reason = _failure_reason(payload)
        return cls(
            id=generation_id,
            state=known.value if known is not None else state,
            failure_reason=None if reason is None else outcome.storable_text(reason, outcome.MAX_TEXT_BYTES),
            video_url=_find_video_url(payload),
            created_at=None if created_at is None else outcome.storable_text(str(created_at), 64),
            api=api or _stored_family(payload.get("api")),
            usage=_usage(payload),
            raw=dict(payload),
        )

    def to_dict(self, *, compact: bool = False) -> dict[str, Any]:
        """
        Plain JSON for XCom and trigger events: the API's own object with the parsed fields on top,
        without the echo of the request (see :data:`UNSTORED_KEYS`).

        ``video_url`` is always present, so users need not know where the API put it; ``api`` says
        which endpoint family later calls must use.

        :param compact: Only :data:`EVENT_KEYS`, each bounded (what trigger events carry, kept small in
            the metadata DB: :func:`airflow_provider_luma.outcome.event_generation`); :meth:`from_dict`
            rebuilds the same generation from either form. Neither form is made storable here: what is
            handed to Airflow goes through :mod:`airflow_provider_luma.outcome`.
        """
        if compact:
            return outcome.event_generation(self)
        kept = {key: value for key, value in self.raw.items() if key not in UNSTORED_KEYS}
        return {
            **kept,
            "id": self.id,
            "state": self.state,
            "failure_reason": self.failure_reason,
            "video_url": self.video_url,
            "created_at": self.created_at,
            "api": self.api.value if self.api else None,
            "usage": dict(self.usage) if self.usage else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Generation:
        """Rebuild a generation from :meth:`to_dict` (or any API object)."""
        return cls.from_api(data)


def _stored_family(value: Any) -> ApiFamily | None:
    try:
        return ApiFamily(value) if value is not None else None
    except ValueError:
        return None


def _failure_reason(payload: Mapping[str, Any]) -> str | None:
    reason = payload.get("failure_reason")
    if reason is None:
        error = payload.get("error")  # the universal endpoint: {"name", "message"}
        reason = error.get("message") or error.get("name") if isinstance(error, Mapping) else error
    return None if reason is None else str(reason)


def _usage(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    usage = payload.get("usage")  # what to_dict wrote
    meta = payload.get("meta")
    if usage is None and isinstance(meta, Mapping):
        usage = meta.get("usage")
    if not isinstance(usage, Mapping):
        return None
    # Logged and stored: keys and values made storable here (numbers within msgpack's range, text valid UTF-8).
    return {
        outcome.storable_text(str(key), 64): outcome.storable(value, depth=0, text_limit=64)
        for key, value in usage.items()
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and key
    }


def _find_video_url(payload: Mapping[str, Any]) -> str | None:
    url = _video_url_field(payload)
    if url is None:
        return None
    if len(url.encode("utf-8", "replace")) > outcome.MAX_URL_BYTES:
        log.warning("The Luma API sent a video URL longer than %d bytes: left out.", outcome.MAX_URL_BYTES)
        return None
    return outcome.storable_text(url, outcome.MAX_URL_BYTES)


def _video_url_field(payload: Mapping[str, Any]) -> str | None:
    # Luma puts it in assets.video; the universal endpoint and wrappers use video.url or video_url.
    candidates = []
    assets = payload.get("assets")
    if isinstance(assets, Mapping):
        candidates.append(assets.get("video"))
    video = payload.get("video")
    if isinstance(video, Mapping):
        candidates.append(video.get("url"))
    elif isinstance(video, str):
        candidates.append(video)
    candidates.append(payload.get("video_url"))
    return next((c for c in candidates if isinstance(c, str) and c), None)


def parse_generation_list(payload: Any, *, api: ApiFamily | None = None) -> list[Generation]:
    """
    Parse the multi-fetch answer: a list, or an object holding it under ``generations`` or ``data``.

    Item by item: a malformed item is left out (and so counts as missing for the wait), never hiding
    the others. Raises :class:`LumaResponseError` only when the answer holds no list at all.
    """
    items = payload
    if isinstance(payload, Mapping):
        items = next((payload[key] for key in ("generations", "data") if isinstance(payload.get(key), list)), None)
        if items is None and ("id" in payload or "generation_id" in payload):
            items = [payload]
    if not isinstance(items, list):
        raise LumaResponseError(
            "The Luma API answered the multi-fetch with neither a list of generations nor an object "
            "holding one under 'generations' or 'data'."
        )
    generations = []
    for index, item in enumerate(items):
        try:
            generations.append(Generation.from_api(item, api=api))
        except LumaResponseError as error:
            log.warning("Item %d of the Luma multi-fetch answer is unusable (%s): skipping it.", index, error.message)
    return generations


@dataclass(frozen=True)
class GenerationRef:
    """
    Which generation, and in which endpoint family to look for it.

    :param id: The generation id.
    :param api: Its family; ``None``: not known yet (the connection's default ``api`` extra decides).
    """

    id: str
    api: ApiFamily | None = None

    def resolved(self, default: ApiFamily) -> GenerationRef:
        """This reference with its family decided: known, hinted by the id's form, or ``default``."""
        return self if self.api is not None else GenerationRef(self.id, family_hint(self.id) or default)


def normalize_generation_refs(
    value: Any, *, parameter: str = "generation_ids", api: ApiFamily | str | None = None
) -> list[GenerationRef]:
    """
    Turn what a user passes as generations into references: ids with their family where known.

    Accepts one id, a comma-separated string, a generation dict (as the generate operator returns
    it), or any iterable of those (a lazy XCom sequence included). Duplicates are dropped, order kept.
    A dict's own ``api`` wins, then ``api``, then the id's form (``<uuid>:luma/ray-2`` is universal).

    :param value: The generations.
    :param parameter: The parameter name to use in error messages.
    :param api: The family of the plain ids given, if the caller knows it.
    """
    explicit = ApiFamily.parse(api) if api is not None else None
    refs: list[GenerationRef] = []

    def add(item: Any) -> None:
        known: ApiFamily | None = None
        if isinstance(item, (Generation, GenerationRef)):
            item, known = item.id, item.api
        if isinstance(item, Mapping):
            item, known = (item.get("id") or item.get("generation_id")), _stored_family(item.get("api"))
        if isinstance(item, str):
            parts = [part.strip() for part in item.split(",")]
            if not all(parts):
                raise LumaInputError(f"{parameter} holds an empty generation id in {item!r}.")
            refs.extend(GenerationRef(part, known or explicit or family_hint(part)) for part in parts)
        elif item is None:
            raise LumaInputError(f"{parameter} holds None where a generation id was expected.")
        else:
            raise LumaInputError(
                f"{parameter} holds {type(item).__name__} {item!r}: expected an id string or a generation dict."
            )

    if isinstance(value, (str, Mapping, Generation, GenerationRef)) or value is None:
        add(value)
    elif isinstance(value, Iterable):
        for item in value:
            add(item)
    else:
        add(value)
    if not refs:
        raise LumaInputError(f"{parameter} is empty: give at least one generation id.")
    for ref in refs:
        if ref.id in ("None", "null"):
            raise LumaInputError(f"{parameter} rendered to {ref.id!r}: the upstream task returned no id.")
        if _RENDERED_OBJECT_CHAR.search(ref.id):
            raise LumaInputError(
                f"{parameter} holds {outcome.storable_text(repr(ref.id), 300)}, which looks like part of a Python "
                "list or dict rendered as text: set render_template_as_native_obj=True on the DAG (or pass the "
                "task's output itself, not a template of it)."
            )
        if not is_wellformed_id(ref.id):
            raise LumaInputError(
                f"{parameter} holds a malformed generation id {outcome.storable_text(repr(ref.id), 300)}."
            )
    unique: dict[str, GenerationRef] = {}
    for ref in refs:
        unique.setdefault(ref.id, ref)
    return list(unique.values())


def is_wellformed_id(generation_id: str) -> bool:
    """
    Whether ``generation_id`` can be an id: at most :data:`MAX_ID_LENGTH` characters, no space or
    control character, no quote or bracket, valid UTF-8 (it goes into URLs, XCom and file names).
    """
    # isprintable() refuses NUL, lone surrogates (Cc, Cs) and every space but " ": the text is storable as it is.
    return (
        0 < len(generation_id) <= MAX_ID_LENGTH and generation_id.isprintable() and not _NOT_IN_ID.search(generation_id)
    )


def normalize_generation_ids(value: Any, *, parameter: str = "generation_ids") -> list[str]:
    """The ids of :func:`normalize_generation_refs` (same rules), without their families."""
    return [ref.id for ref in normalize_generation_refs(value, parameter=parameter)]
