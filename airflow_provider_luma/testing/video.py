"""The simulator's videos: one pre-made clip per aspect ratio the API accepts, served from the video origin.

The clips (``videos/<w>x<h>.mp4``, made by ``scripts/make_sample_videos``) are short H.264 test patterns
stamped "simulated" and the aspect ratio, a few tens of KB each; nothing encodes video at run time. A
generation gets the clip of its request's ``aspect_ratio``, else the default (16:9, the default of the API's
``luma/ray-3.2`` and of Luma's own API). The clip's duration is its own, whatever ``duration`` was asked.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from airflow_provider_luma.testing.store import Generation, Store

__all__ = [
    "ASPECT_RATIOS",
    "CLIP_PATHS",
    "DEFAULT_ASPECT_RATIO",
    "SAMPLE_VIDEO_PATH",
    "aspect_ratio_of",
    "clip_bytes",
    "clip_path",
    "video_name",
]

#: The aspect ratios the API accepts, each with a clip.
ASPECT_RATIOS: tuple[str, ...] = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
DEFAULT_ASPECT_RATIO = "16:9"
_FOLDER = Path(__file__).with_name("videos")
#: The clip of each aspect ratio.
CLIP_PATHS: dict[str, Path] = {ratio: _FOLDER / f"{ratio.replace(':', 'x')}.mp4" for ratio in ASPECT_RATIOS}
#: The clip of the default aspect ratio: what a generation that asked for none downloads.
SAMPLE_VIDEO_PATH = CLIP_PATHS[DEFAULT_ASPECT_RATIO]


def clip_path(aspect_ratio: str | None = None) -> Path:
    """The clip served for ``aspect_ratio`` (the default clip for None or a ratio without one)."""
    return CLIP_PATHS.get(aspect_ratio or DEFAULT_ASPECT_RATIO, SAMPLE_VIDEO_PATH)


@functools.cache
def _read(path: Path) -> bytes:
    return path.read_bytes()


def clip_bytes(aspect_ratio: str | None = None) -> bytes:
    """The bytes of :func:`clip_path` (read once)."""
    return _read(clip_path(aspect_ratio))


def aspect_ratio_of(request: Mapping[str, Any]) -> str:
    """The aspect ratio a create asked for, if it is one with a clip, else the default."""
    ratio = request.get("aspect_ratio")
    return ratio if isinstance(ratio, str) and ratio in CLIP_PATHS else DEFAULT_ASPECT_RATIO


def video_name(gen: Generation) -> str:
    """The file name a generation's video is served under: its uuid part (universal ids hold ``:`` and ``/``)."""
    return f"{gen.uuid}.mp4"


def video_of(store: Store, name: str, *, completed_only: bool = True) -> bytes | None:
    """The clip ``/videos/<name>`` serves: that of a (completed) generation's aspect ratio; None if there is none."""
    if not name.endswith(".mp4"):
        return None
    with store.lock:
        gen = store.find(name.removesuffix(".mp4"))
        if gen is None or (completed_only and gen.state_at(time.time()) != "completed"):
            return None
        ratio = aspect_ratio_of(gen.request)
    return clip_bytes(ratio)


def video_handler(store: Store, not_found: Any) -> Any:
    """The video origin's ``GET /videos/{name}``: the clip, or ``not_found(request)``."""

    async def serve(request: web.Request) -> web.StreamResponse:
        data = video_of(store, request.match_info["name"])
        if data is None:
            return not_found(request)
        return web.Response(body=data, content_type="video/mp4")

    return serve
