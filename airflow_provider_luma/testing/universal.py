"""The universal video endpoint of the simulator: body validation and answer rendering.

``POST /v2/video/generations`` and ``GET /v2/video/generations?generation_id=ID`` are the
service's current API for Luma's models (see :mod:`airflow_provider_luma.testing.simulator`).
This module holds what is specific to that family, as pure functions over plain data: the
simulator keeps the store, the timelines and the HTTP plumbing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "DEFAULT_STATUS_WORDS",
    "UNIVERSAL_MODELS",
    "UNIVERSAL_PATH",
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

MAX_PROMPT = 2048
_RAY2_ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
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
FrameCheck = Callable[[Any, str, Err], None]


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
    errors: list[dict[str, Any]] = []

    def err(path: str, message: str) -> None:
        errors.append({"path": path, "message": message})

    if not isinstance(body, dict):
        err("", "Expected a JSON object")
        return errors
    check_prompt(body, err)
    model = body.get("model")
    if "model" not in body:
        err("model", "Required")
        return errors
    if not isinstance(model, str):
        err("model", "Expected string")
        return errors
    allowed = UNIVERSAL_MODELS.get(model)
    if allowed is None:
        if not model.startswith("luma/"):
            err("model", f"Invalid enum value. Expected {' | '.join(UNIVERSAL_MODELS)}, received '{model}'")
        # A luma/ model newer than this simulator: accept whatever it is sent.
        return errors
    for key in sorted(set(body) - allowed - {"model", "prompt"}):
        err(key, f"Unrecognized property '{key}' for model {model}")

    def enum(name: str, values: tuple[str, ...]) -> None:
        if name in body and body[name] not in values:
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
        return errors
    enum("aspect_ratio", _RAY2_ASPECT_RATIOS)
    if "resolution" in allowed:
        enum("resolution", _RAY2_RESOLUTIONS)
    if "duration" in allowed:
        duration((5, 9))
    check_keyframes(body, err, check_frame)
    return errors


def check_prompt(body: dict[str, Any], err: Err) -> None:
    """The ``prompt`` rules both families share: required, a string, at most 2048 characters."""
    prompt = body.get("prompt")
    if "prompt" not in body:
        err("prompt", "Required")
    elif not isinstance(prompt, str):
        err("prompt", "Expected string")
    elif len(prompt) > MAX_PROMPT:
        err("prompt", f"String must contain at most {MAX_PROMPT} character(s)")


def check_keyframes(body: dict[str, Any], err: Err, check_frame: FrameCheck) -> None:
    """The ``keyframes`` rules both families share: null or ``{frame0, frame1}``, each checked by ``check_frame``."""
    keyframes = body.get("keyframes")
    if keyframes is None:
        return
    if not isinstance(keyframes, dict):
        err("keyframes", "Expected object or null")
        return
    for key in sorted(set(keyframes) - {"frame0", "frame1"}):
        err(f"keyframes.{key}", f"Unrecognized property '{key}'")
    for name in ("frame0", "frame1"):
        check_frame(keyframes.get(name), f"keyframes.{name}", err)


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
