"""The small typed model of the Luma API: states, generations and the checks on user input."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from airflow_provider_luma.errors import LumaInputError, LumaResponseError

log = logging.getLogger(__name__)

MAX_PROMPT_LENGTH = 2048
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
MODELS = ("ray-1-6", "ray-2", "ray-flash-2")
RESOLUTIONS = ("540p", "720p", "1080p", "4k")
DURATIONS = ("5s", "9s")
KEYFRAME_SLOTS = ("frame0", "frame1")


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
WAITABLE_STATES = (GenerationState.QUEUED, GenerationState.DREAMING, GenerationState.COMPLETED)
_warned_unknown_states: set[str] = set()


def parse_state(value: Any) -> GenerationState | None:
    """Map the API's state text to a :class:`GenerationState`; an invented state is ``None`` (not terminal)."""
    if isinstance(value, GenerationState):
        return value
    try:
        return GenerationState(str(value).lower())
    except ValueError:
        if str(value) not in _warned_unknown_states:
            _warned_unknown_states.add(str(value))
            log.warning("The Luma API reported an unknown state %r: treating it as not finished.", value)
        return None


@dataclass(frozen=True)
class Generation:
    """
    One Luma generation as the API reported it.

    :param id: The generation id.
    :param state: The state text as reported (``None`` if the API sent none).
    :param failure_reason: Why the generation failed, when it did.
    :param video_url: Where the finished video can be downloaded (a CDN, not the API).
    :param created_at: The creation time as the API wrote it (ISO-8601).
    :param raw: The whole JSON object the API returned.
    """

    id: str
    state: str | None = None
    failure_reason: str | None = None
    video_url: str | None = None
    created_at: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def known_state(self) -> GenerationState | None:
        """The state as a :class:`GenerationState`, ``None`` when missing or unknown."""
        return parse_state(self.state) if self.state is not None else None

    @property
    def is_failed(self) -> bool:
        """Whether the generation failed."""
        return self.known_state is GenerationState.FAILED

    def has_reached(self, target: GenerationState) -> bool:
        """Whether the generation reached ``target`` or a later non-failed state."""
        state = self.known_state
        return state is not None and state.has_reached(target)

    @classmethod
    def from_api(cls, payload: Any) -> Generation:
        """
        Build a generation from any shape the API (or a wrapper of it) is known to return.

        Also accepts what :meth:`to_dict` produced. Raises :class:`LumaResponseError` when the
        payload is not an object with an ``id``.
        """
        if not isinstance(payload, Mapping):
            raise LumaResponseError(
                f"The Luma API returned {type(payload).__name__} where a generation object was expected."
            )
        generation_id = payload.get("id")
        if not isinstance(generation_id, str) or not generation_id.strip():
            raise LumaResponseError("The Luma API returned a generation without an id.")
        state = payload.get("state")
        failure_reason = payload.get("failure_reason")
        created_at = payload.get("created_at")
        return cls(
            id=generation_id,
            state=None if state is None else str(state),
            failure_reason=None if failure_reason is None else str(failure_reason),
            video_url=_find_video_url(payload),
            created_at=None if created_at is None else str(created_at),
            raw=dict(payload),
        )

    def to_dict(self) -> dict[str, Any]:
        """
        Plain JSON for XCom and trigger events: the API's own object with the parsed fields on top.

        ``video_url`` is always present, so users need not know where the API put it.
        """
        return {
            **self.raw,
            "id": self.id,
            "state": self.state,
            "failure_reason": self.failure_reason,
            "video_url": self.video_url,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Generation:
        """Rebuild a generation from :meth:`to_dict` (or any API object)."""
        return cls.from_api(data)


def _find_video_url(payload: Mapping[str, Any]) -> str | None:
    # Luma puts it in assets.video; wrappers were seen using video.url or video_url.
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


def parse_generation_list(payload: Any) -> list[Generation]:
    """Parse the multi-fetch answer: a list, or an object holding it under ``generations`` or ``data``."""
    items = payload
    if isinstance(payload, Mapping):
        items = next((payload[key] for key in ("generations", "data") if isinstance(payload.get(key), list)), None)
        if items is None and "id" in payload:
            items = [payload]
    if not isinstance(items, list):
        raise LumaResponseError(
            "The Luma API answered the multi-fetch with neither a list of generations nor an object "
            "holding one under 'generations' or 'data'."
        )
    return [Generation.from_api(item) for item in items]


def normalize_generation_ids(value: Any, *, parameter: str = "generation_ids") -> list[str]:
    """
    Turn what a user passes as ids into a plain list of non-empty id strings.

    Accepts one id, a comma-separated string, a generation dict (as the generate operator returns
    it), or any iterable of those (a lazy XCom sequence included). Duplicates are dropped, order kept.

    :param value: The ids.
    :param parameter: The parameter name to use in error messages.
    """
    ids: list[str] = []

    def add(item: Any) -> None:
        if isinstance(item, Generation):
            item = item.id
        if isinstance(item, Mapping):
            item = item.get("id")
        if isinstance(item, str):
            parts = [part.strip() for part in item.split(",")]
            if not all(parts):
                raise LumaInputError(f"{parameter} holds an empty generation id in {item!r}.")
            ids.extend(parts)
        elif item is None:
            raise LumaInputError(f"{parameter} holds None where a generation id was expected.")
        else:
            raise LumaInputError(
                f"{parameter} holds {type(item).__name__} {item!r}: expected an id string or a generation dict."
            )

    if isinstance(value, (str, Mapping, Generation)) or value is None:
        add(value)
    elif isinstance(value, Iterable):
        for item in value:
            add(item)
    else:
        add(value)
    if not ids:
        raise LumaInputError(f"{parameter} is empty: give at least one generation id.")
    for generation_id in ids:
        if generation_id in ("None", "null"):
            raise LumaInputError(f"{parameter} rendered to {generation_id!r}: the upstream task returned no id.")
        if any(ch.isspace() for ch in generation_id) or len(generation_id) > 128:
            raise LumaInputError(f"{parameter} holds a malformed generation id {generation_id!r}.")
    return list(dict.fromkeys(ids))


def build_create_request(
    prompt: str,
    *,
    aspect_ratio: str | None = None,
    model: str | None = None,
    resolution: str | None = None,
    duration: str | None = None,
    loop: bool | None = None,
    keyframes: Mapping[str, Any] | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """
    Check the parameters of a new generation and return the request body; ``None`` values are left out.

    Raises :class:`LumaInputError` naming the parameter and its allowed values.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise LumaInputError("prompt must be a non-empty string describing the video.")
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise LumaInputError(f"prompt is {len(prompt)} characters long; the API accepts at most {MAX_PROMPT_LENGTH}.")
    body: dict[str, Any] = {"prompt": prompt}
    for name, value, allowed in (
        ("aspect_ratio", aspect_ratio, ASPECT_RATIOS),
        ("model", model, MODELS),
        ("resolution", resolution, RESOLUTIONS),
        ("duration", duration, DURATIONS),
    ):
        if value is None:
            continue
        if value not in allowed:
            raise LumaInputError(f"{name}={value!r} is not supported: use one of {', '.join(allowed)}.")
        body[name] = value
    if loop is not None:
        if not isinstance(loop, bool):
            raise LumaInputError(f"loop must be True or False, not {loop!r}.")
        body["loop"] = loop
    if keyframes is not None:
        body["keyframes"] = _check_keyframes(keyframes)
    if callback_url is not None:
        if not isinstance(callback_url, str) or not callback_url.startswith(("https://", "http://")):
            raise LumaInputError(f"callback_url must be an http(s) URL, not {callback_url!r}.")
        body["callback_url"] = callback_url
    return body


def _check_keyframes(keyframes: Any) -> dict[str, Any]:
    if not isinstance(keyframes, Mapping):
        raise LumaInputError("keyframes must be a dict with 'frame0' and/or 'frame1'.")
    unknown = set(keyframes) - set(KEYFRAME_SLOTS)
    if unknown:
        raise LumaInputError(f"keyframes has unknown keys {sorted(unknown)}: only 'frame0' and 'frame1' exist.")
    checked: dict[str, Any] = {}
    for slot in KEYFRAME_SLOTS:
        frame = keyframes.get(slot)
        if frame is None:
            continue
        if not isinstance(frame, Mapping):
            raise LumaInputError(f"keyframes.{slot} must be a dict such as {{'type': 'image', 'url': ...}}.")
        kind = frame.get("type")
        if kind == "image":
            url = frame.get("url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise LumaInputError(f"keyframes.{slot} is an image keyframe: give its http(s) 'url'.")
            checked[slot] = {"type": "image", "url": url}
        elif kind == "generation":
            generation_id = frame.get("id")
            if not isinstance(generation_id, str) or not generation_id.strip():
                raise LumaInputError(f"keyframes.{slot} is a generation keyframe: give the generation's 'id'.")
            checked[slot] = {"type": "generation", "id": generation_id}
        else:
            raise LumaInputError(f"keyframes.{slot} has type {kind!r}: use 'image' or 'generation'.")
    if not checked:
        raise LumaInputError("keyframes is given but holds no frame: set 'frame0' and/or 'frame1'.")
    return checked
