"""
What a new generation may be asked for, per endpoint family and model: written once, used by the
hook, by the generate operator's parameters and template fields, and by every check before paying.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_luma.errors import LumaInputError
from airflow_provider_luma.models import ApiFamily, Generation

log = logging.getLogger(__name__)

MAX_PROMPT_LENGTH = 2048
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
#: The seed's model names: they select the ``luma-ai`` endpoints (with the long poll).
LUMA_AI_MODELS = ("ray-1-6", "ray-2", "ray-flash-2")
KEYFRAME_SLOTS = ("frame0", "frame1")
EDIT_TYPES = ("video", "video_edit", "video_reframe")

#: Every create parameter a user can give besides ``prompt``, in the order the docs list them. A user
#: name differs from the API's where the API's would clash: ``edit_type`` is sent as ``type`` (a Python
#: builtin), ``source_video_url`` as ``video_url`` (the finished video's URL in XCom and ``Generation``).
CREATE_PARAMETERS = (
    "model",
    "aspect_ratio",
    "resolution",
    "duration",
    "loop",
    "keyframes",
    "callback_url",
    "edit_type",
    "hdr",
    "exr_export",
    "image_url",
    "last_image_url",
    "source_video_url",
)

Check = Callable[[str, Any], Any]


def _choice(*allowed: str) -> Check:
    def check(name: str, value: Any) -> Any:
        if value not in allowed:
            raise LumaInputError(f"{name}={value!r} is not supported: use one of {', '.join(allowed)}.")
        return value

    return check


def _seconds(*allowed: int, suffix: bool) -> Check:
    """A clip length: ``5``, ``"5"`` or ``"5s"`` from users; sent as ``"5s"`` (luma-ai) or ``5`` (universal)."""
    spelled = ", ".join(f"{s}s" if suffix else str(s) for s in allowed)

    def check(name: str, value: Any) -> Any:
        seconds: Any = value
        if isinstance(value, str):
            text = value.strip().lower().removesuffix("s")
            seconds = int(text) if text.isdigit() else None
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
            seconds = int(value)
        if isinstance(seconds, bool) or seconds not in allowed:
            raise LumaInputError(f"{name}={value!r} is not supported: use one of {spelled}.")
        return f"{seconds}s" if suffix else seconds

    return check


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"  # a rendered template is a string
    if not isinstance(value, bool):
        raise LumaInputError(f"{name} must be True or False, not {value!r}.")
    return value


def _url(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise LumaInputError(f"{name} must be an http(s) URL, not {value!r}.")
    return value


def _source_video(name: str, value: Any) -> str:
    # A generation of ours (e.g. another generate task's output) stands for its finished video.
    if isinstance(value, Generation):
        value = value.to_dict()
    if isinstance(value, Mapping):
        if not value.get("video_url"):
            raise LumaInputError(
                f"{name} is generation {value.get('id')!r}, which has no video yet: wait for it to complete first."
            )
        value = value["video_url"]
    return _url(name, value)


def _keyframes(name: str, keyframes: Any) -> dict[str, Any]:
    if not isinstance(keyframes, Mapping):
        raise LumaInputError(f"{name} must be a dict with 'frame0' and/or 'frame1'.")
    unknown = set(keyframes) - set(KEYFRAME_SLOTS)
    if unknown:
        raise LumaInputError(f"{name} has unknown keys {sorted(unknown)}: only 'frame0' and 'frame1' exist.")
    checked: dict[str, Any] = {}
    for slot in KEYFRAME_SLOTS:
        frame = keyframes.get(slot)
        if frame is None:
            continue
        if not isinstance(frame, Mapping):
            raise LumaInputError(f"{name}.{slot} must be a dict such as {{'type': 'image', 'url': ...}}.")
        kind = frame.get("type")
        if kind == "image":
            url = frame.get("url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise LumaInputError(f"{name}.{slot} is an image keyframe: give its http(s) 'url'.")
            checked[slot] = {"type": "image", "url": url}
        elif kind == "generation":
            generation_id = frame.get("id")
            if not isinstance(generation_id, str) or not generation_id.strip():
                raise LumaInputError(f"{name}.{slot} is a generation keyframe: give the generation's 'id'.")
            checked[slot] = {"type": "generation", "id": generation_id}
        else:
            raise LumaInputError(f"{name}.{slot} has type {kind!r}: use 'image' or 'generation'.")
    if not checked:
        raise LumaInputError(f"{name} is given but holds no frame: set 'frame0' and/or 'frame1'.")
    return checked


@dataclass(frozen=True)
class Field:
    """
    One create parameter of one model.

    :param api_name: Its name in the request body.
    :param check: Returns the value to send, or raises :class:`LumaInputError` naming the parameter.
    """

    api_name: str
    check: Check


@dataclass(frozen=True)
class ModelSpec:
    """
    What one model (or the ``luma-ai`` endpoints as a whole) accepts.

    :param api: The endpoint family it is created and fetched through.
    :param fields: User parameter name → :class:`Field`.
    :param rule: A check across fields on the finished body (e.g. Ray 3.2's ``hdr`` limits).
    """

    api: ApiFamily
    fields: Mapping[str, Field]
    rule: Callable[[Mapping[str, Any]], None] | None = None

    def accepts(self) -> str:
        """The user parameters this model takes, for messages."""
        return ", ".join(self.fields)


def _ray32_rules(body: Mapping[str, Any]) -> None:
    kind = body.get("type", "video")
    if kind in ("video_edit", "video_reframe") and "video_url" not in body:
        raise LumaInputError(f"edit_type={kind!r} needs source_video_url: the video (or generation) to work on.")
    if body.get("hdr"):
        if body.get("duration", 5) != 5 or body.get("resolution", "720p") not in ("720p", "1080p"):
            raise LumaInputError("hdr=True needs duration 5 and resolution 720p or 1080p (Ray 3.2's HDR limits).")
    elif body.get("exr_export"):
        raise LumaInputError("exr_export=True needs hdr=True.")


_LOOP = Field("loop", _boolean)
_KEYFRAMES = Field("keyframes", _keyframes)
_RAY2_FIELDS = {
    "aspect_ratio": Field("aspect_ratio", _choice(*ASPECT_RATIOS)),
    "resolution": Field("resolution", _choice("540p", "720p", "1080p", "4k")),
    "duration": Field("duration", _seconds(5, 9, suffix=False)),
    "loop": _LOOP,
    "keyframes": _KEYFRAMES,
}
#: The seed's endpoints: one body for every model there; no model means the API's default (ray-2).
LUMA_AI_SPEC = ModelSpec(
    ApiFamily.LUMA_AI,
    {
        "aspect_ratio": Field("aspect_ratio", _choice(*ASPECT_RATIOS)),
        "resolution": Field("resolution", _choice("540p", "720p", "1080p", "4k")),
        "duration": Field("duration", _seconds(5, 9, suffix=True)),
        "loop": _LOOP,
        "keyframes": _KEYFRAMES,
        "callback_url": Field("callback_url", _url),
    },
)
#: The universal endpoint's Luma models (the service's reference pages, 2026).
UNIVERSAL_MODELS: Mapping[str, ModelSpec] = {
    "luma/ray-2": ModelSpec(ApiFamily.VIDEO, _RAY2_FIELDS),
    "luma/ray-flash-2": ModelSpec(ApiFamily.VIDEO, _RAY2_FIELDS),
    "luma/ray-3.2": ModelSpec(
        ApiFamily.VIDEO,
        {
            "edit_type": Field("type", _choice(*EDIT_TYPES)),
            "aspect_ratio": Field("aspect_ratio", _choice("9:16", "3:4", "1:1", "4:3", "16:9", "21:9")),
            "resolution": Field("resolution", _choice("360p", "540p", "720p", "1080p")),
            "duration": Field("duration", _seconds(5, 10, suffix=False)),
            "loop": _LOOP,
            "hdr": Field("hdr", _boolean),
            "exr_export": Field("exr_export", _boolean),
            "image_url": Field("image_url", _url),
            "last_image_url": Field("last_image_url", _url),
            "source_video_url": Field("video_url", _source_video),
        },
        rule=_ray32_rules,
    ),
    "luma/ray-1-6": ModelSpec(
        ApiFamily.VIDEO,
        {"aspect_ratio": Field("aspect_ratio", _choice(*ASPECT_RATIOS)), "loop": _LOOP, "keyframes": _KEYFRAMES},
    ),
}
#: The user name → API name of every parameter, for models this release does not know yet.
_API_NAMES = {"edit_type": "type", "source_video_url": "video_url"}
_warned_unknown_models: set[str] = set()


@dataclass(frozen=True)
class CreateRequest:
    """
    A checked request for a new generation: where it goes and what it says.

    :param api: The endpoint family to create it through.
    :param body: The JSON body, ``None`` values left out.
    """

    api: ApiFamily
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str | None:
        """The model asked for (``None``: the ``luma-ai`` endpoints' default)."""
        return self.body.get("model")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, e.g. for a fingerprint of the request."""
        return {"api": self.api.value, "body": dict(self.body)}


def build_create_request(
    prompt: Any, *, model: Any = None, cross_checks: bool = True, **parameters: Any
) -> CreateRequest:
    """
    Check the parameters of a new generation and say where it goes; ``None`` values are left out.

    A model with the ``luma/`` prefix (``luma/ray-2``, ``luma/ray-3.2`` ...) goes to the universal
    endpoint; the seed's names (``ray-2`` ...) or no model go to the ``luma-ai`` endpoints. A
    ``luma/`` model this release does not know is sent as is, with one warning.

    :param prompt: What the video shows.
    :param model: The model id.
    :param cross_checks: Check rules across parameters (e.g. Ray 3.2's ``hdr`` limits); off while some
        values are not known yet (a DAG being parsed, with templates still to render).
    :param parameters: Any of :data:`CREATE_PARAMETERS` but ``model``.
    :raises LumaInputError: Naming the parameter and what is allowed, before anything is paid for.
    """
    unknown = sorted(set(parameters) - set(CREATE_PARAMETERS))
    if unknown:
        raise LumaInputError(f"Unknown create parameter(s) {unknown}: use {', '.join(CREATE_PARAMETERS)}.")
    if not isinstance(prompt, str) or not prompt.strip():
        raise LumaInputError("prompt must be a non-empty string describing the video.")
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise LumaInputError(f"prompt is {len(prompt)} characters long; the API accepts at most {MAX_PROMPT_LENGTH}.")
    given = {name: value for name, value in parameters.items() if value is not None}
    body: dict[str, Any] = {"prompt": prompt}
    spec = _spec_for(model)
    if model is not None:
        body["model"] = model
    if spec is None:  # a luma/ model newer than this release: the service checks it
        body.update({_API_NAMES.get(name, name): value for name, value in given.items()})
        return CreateRequest(ApiFamily.VIDEO, body)
    for name, value in given.items():
        if name not in spec.fields:
            raise LumaInputError(
                f"{name} is not a parameter of model {model or 'ray-2 (the default)'!r}: it takes {spec.accepts()}."
            )
        entry = spec.fields[name]
        body[entry.api_name] = entry.check(name, value)
    if spec.rule is not None and cross_checks:
        spec.rule(body)
    return CreateRequest(spec.api, body)


def _spec_for(model: Any) -> ModelSpec | None:
    if model is None or model in LUMA_AI_MODELS:
        return LUMA_AI_SPEC
    if model in UNIVERSAL_MODELS:
        return UNIVERSAL_MODELS[model]
    if isinstance(model, str) and model.startswith("luma/") and len(model) > len("luma/") and model.isprintable():
        if model not in _warned_unknown_models:
            _warned_unknown_models.add(model)
            log.warning(
                "Model %r is not one this provider knows: sending it to the universal endpoint as is, with its "
                "parameters unchecked.",
                model,
            )
        return None
    raise LumaInputError(
        f"model={model!r} is not supported: use one of {', '.join(LUMA_AI_MODELS)} (the luma-ai endpoints, "
        f"with the long poll) or {', '.join(UNIVERSAL_MODELS)} (the universal endpoint; any other 'luma/...' "
        "model is sent as is)."
    )


#: The universal model that takes over a ``luma-ai`` model when the service no longer has those routes.
UNIVERSAL_EQUIVALENTS = {None: "luma/ray-2", "ray-2": "luma/ray-2", "ray-flash-2": "luma/ray-flash-2"}


def to_universal(request: CreateRequest) -> CreateRequest:
    """
    The same request for the universal endpoint, for when the ``luma-ai`` routes are gone.

    :raises LumaInputError: When something asked for has no equivalent there (``callback_url``,
        the deprecated ``ray-1-6``'s resolution...).
    """
    body = dict(request.body)
    model = body.pop("model", None)
    if model not in UNIVERSAL_EQUIVALENTS:
        raise LumaInputError(
            f"The service no longer serves the luma-ai endpoints, and model {model!r} has no equivalent on the "
            f"universal one: use one of {', '.join(UNIVERSAL_MODELS)}."
        )
    prompt = body.pop("prompt")
    duration = body.pop("duration", None)
    parameters = {name: value for name, value in body.items() if name != "generation_type"}
    if "callback_url" in parameters:
        raise LumaInputError(
            "The service no longer serves the luma-ai endpoints, and the universal endpoint has no callback_url: "
            "remove it (the wait polls instead)."
        )
    if duration is not None:
        parameters["duration"] = duration
    return build_create_request(prompt, model=UNIVERSAL_EQUIVALENTS[model], **parameters)


# -- Luma's own Dream Machine API ------------------------------------------------------------------
#
# A connection to Luma's API (https://api.lumalabs.ai/dream-machine/v1) takes the same DAGs as one to the
# AI/ML API: a request is first checked as above (against the family its model names there), then
# written the way Luma's API asks for it. Luma's create takes exactly what the luma-ai endpoints take
# (they wrapped it: prompt, model, aspect_ratio, resolution, duration "5s"/"9s", loop, keyframes,
# callback_url; the lumaai SDK's VideoCreateParams), so a luma-ai request is sent as it is, and a
# universal one is mapped back the way to_universal maps forward.

#: Luma's video models on its Dream Machine API (the ``lumaai`` SDK's ``model`` literal).
DREAM_MACHINE_MODELS = LUMA_AI_MODELS
#: What Luma's create takes besides ``prompt`` and ``model``: the body the ``luma-ai`` endpoints take.
DREAM_MACHINE_FIELDS: Mapping[str, Field] = LUMA_AI_SPEC.fields
#: The AI/ML API's universal name of each model → its name on Luma's API.
DREAM_MACHINE_EQUIVALENTS = {"luma/ray-2": "ray-2", "luma/ray-flash-2": "ray-flash-2", "luma/ray-1-6": "ray-1-6"}
#: The model Luma's create is sent when none was asked for (the ``luma-ai`` endpoints' default; Luma's
#: current create requires one).
DREAM_MACHINE_DEFAULT_MODEL = "ray-2"
#: Models the AI/ML API has and Luma's Dream Machine API does not, with what to use instead.
NOT_ON_DREAM_MACHINE = {
    "luma/ray-3.2": (
        "Luma serves Ray 3.2 on its Agents API (agents.lumalabs.ai), not on the Dream Machine API this "
        "connection reaches, and this provider does not support the Agents API yet: use ray-2 or ray-flash-2 "
        "here, or an AI/ML API connection for luma/ray-3.2"
    ),
}
_warned_unknown_dream_machine_models: set[str] = set()


def dream_machine_body(request: CreateRequest) -> dict[str, Any]:
    """
    The body of Luma's ``POST /generations/video`` for a checked request (:func:`build_create_request`).

    ``luma/ray-flash-2`` becomes ``ray-flash-2``, ``5`` becomes ``"5s"`` and no model becomes ``ray-2``;
    a ``luma/`` model this release does not know goes with its prefix removed, with one warning (Luma
    checks it, before anything is paid for).

    :raises LumaInputError: For what Luma's API cannot do: ``luma/ray-3.2`` and its parameters.
    """
    body = dict(request.body)
    model = body.pop("model", None)
    prompt = body.pop("prompt")
    if request.api is ApiFamily.LUMA_AI:
        return {"prompt": prompt, "model": model or DREAM_MACHINE_DEFAULT_MODEL, **body}
    if model in NOT_ON_DREAM_MACHINE:
        raise LumaInputError(
            f"model={model!r} is not available on Luma's Dream Machine API: {NOT_ON_DREAM_MACHINE[model]}."
        )
    if model not in DREAM_MACHINE_EQUIVALENTS:
        # A luma/ model newer than this release: build_create_request sent its parameters unchecked.
        name = str(model).removeprefix("luma/")
        if model not in _warned_unknown_dream_machine_models:
            _warned_unknown_dream_machine_models.add(str(model))
            log.warning(
                "Model %r is not one this provider knows: sending it to Luma's API as %r, with its parameters "
                "unchecked.",
                model,
                name,
            )
        return {"prompt": prompt, "model": name, **body}
    # The universal request's fields are a subset of Luma's: check them again as Luma's, which also
    # writes the duration as "5s".
    checked = build_create_request(prompt, model=DREAM_MACHINE_EQUIVALENTS[model], **body)
    return dict(checked.body)
