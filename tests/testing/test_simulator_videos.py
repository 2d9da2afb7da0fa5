"""Simulator: the clip of each aspect ratio, served over real HTTP, is an MP4 a person (and ffprobe) can play.

The MP4 is read with a few lines of box parsing (no dependency): ``ftyp`` first, ``moov`` before ``mdat``
(``+faststart``: a player starts before the whole file arrived), the video track's ``tkhd`` size in the
aspect ratio asked, and enough frames of changing size to be moving. Where ffprobe exists, it reads each
clip as H.264 yuv420p of that size (only that test is skipped without it: CI installs no ffmpeg).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
import requests

from airflow_provider_luma.testing import ASPECT_RATIOS, CLIP_PATHS, SAMPLE_VIDEO_PATH, LumaSimulator, clip_path
from tests.support.simulator_calls import GEN, UNI, auth

Box = tuple[str, int, int]  # type, start of its payload, end


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes between ``start`` and ``end`` (ISO/IEC 14496-12: 32-bit size, or 1 then a 64-bit size)."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[start + 8 : start + 16])
            header = 16
        elif size == 0:
            size = end - start
        assert header <= size <= end - start, f"box {kind!r} at {start} overruns its parent"
        yield kind.decode("latin-1"), start + header, start + size
        start += size


def child(data: bytes, parent: Box, *path: str) -> Box:
    """The first box along ``path`` inside ``parent``."""
    box = parent
    for kind in path:
        box = next(b for b in boxes(data, box[1], box[2]) if b[0] == kind)
    return box


def video_track(data: bytes) -> dict[str, Any]:
    """What the file says of its video track: width and height (``tkhd``), frame sizes (``stsz``)."""
    top = list(boxes(data))
    kinds = [kind for kind, _, _ in top]
    assert kinds[0] == "ftyp", kinds
    assert kinds.index("moov") < kinds.index("mdat"), f"moov after mdat (no +faststart): {kinds}"
    moov = top[kinds.index("moov")]
    for trak in (b for b in boxes(data, moov[1], moov[2]) if b[0] == "trak"):
        hdlr = child(data, trak, "mdia", "hdlr")
        if data[hdlr[1] + 8 : hdlr[1] + 12] != b"vide":
            continue
        tkhd = child(data, trak, "tkhd")
        width, height = struct.unpack(">II", data[tkhd[2] - 8 : tkhd[2]])  # 16.16 fixed point, last in the box
        stsz = child(data, trak, "mdia", "minf", "stbl", "stsz")
        sample_size, count = struct.unpack(">II", data[stsz[1] + 4 : stsz[1] + 12])
        sizes = (
            [sample_size] * count
            if sample_size
            else list(struct.unpack(f">{count}I", data[stsz[1] + 12 : stsz[1] + 12 + 4 * count]))
        )
        return {"width": width >> 16, "height": height >> 16, "frame_sizes": sizes}
    raise AssertionError("no video track")


def served_clip(s: LumaSimulator, family: str, aspect_ratio: str | None) -> bytes:
    """Create a generation of ``family`` asking for ``aspect_ratio``, complete it, download its video."""
    extra = {} if aspect_ratio is None else {"aspect_ratio": aspect_ratio}
    if family == "luma-ai":
        r = requests.post(s.base_url + GEN, json={"prompt": "a clip", **extra}, headers=auth(s), timeout=5)
    else:
        body = {"model": "luma/ray-2", "prompt": "a clip", **extra}
        r = requests.post(s.base_url + UNI, json=body, headers=auth(s), timeout=5)
    assert r.ok, r.text
    gen_id = r.json()["id"]
    s.set_state(gen_id, "completed")
    url = s.generation(gen_id)["assets"]["video"] if family == "luma-ai" else s.generation(gen_id)["video"]["url"]
    video = requests.get(url, timeout=5)
    assert video.status_code == 200
    assert video.headers["Content-Type"] == "video/mp4"
    return video.content


@pytest.mark.parametrize("family", ["luma-ai", "universal"])
@pytest.mark.parametrize("aspect_ratio", ASPECT_RATIOS)
def test_the_clip_of_the_aspect_ratio_asked_is_served(sim: LumaSimulator, family: str, aspect_ratio: str) -> None:
    data = served_clip(sim, family, aspect_ratio)
    assert data == CLIP_PATHS[aspect_ratio].read_bytes()
    track = video_track(data)
    assert Fraction(track["width"], track["height"]) == Fraction(*map(int, aspect_ratio.split(":")))
    assert min(track["width"], track["height"]) >= 144  # large enough to see
    frames = track["frame_sizes"]
    assert len(frames) >= 24  # two seconds at least
    # Moving: most frames differ from the one before by more than an unchanged frame's few bytes.
    assert sum(size > 200 for size in frames[1:]) >= len(frames) * 0.8, frames


@pytest.mark.parametrize("family", ["luma-ai", "universal"])
def test_without_an_aspect_ratio_the_default_clip_is_served(sim: LumaSimulator, family: str) -> None:
    data = served_clip(sim, family, None)
    assert data == SAMPLE_VIDEO_PATH.read_bytes() == clip_path("16:9").read_bytes()
    assert (video_track(data)["width"], video_track(data)["height"]) == (320, 180)


def test_the_clips_are_small() -> None:
    sizes = {ratio: path.stat().st_size for ratio, path in CLIP_PATHS.items()}
    assert sum(sizes.values()) < 400_000, sizes
    assert SAMPLE_VIDEO_PATH.stat().st_size < 100_000  # the demo prints it in bytes


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed (apt-get install -y ffmpeg)")
@pytest.mark.parametrize("aspect_ratio", ASPECT_RATIOS)
def test_ffprobe_reads_every_clip(aspect_ratio: str) -> None:
    path = CLIP_PATHS[aspect_ratio]
    command = ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)]
    probe = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout)
    (stream,) = probe["streams"]
    track = video_track(path.read_bytes())
    assert (stream["codec_name"], stream["pix_fmt"]) == ("h264", "yuv420p")
    assert (stream["width"], stream["height"]) == (track["width"], track["height"])
    assert float(probe["format"]["duration"]) >= 2
    assert int(stream["nb_frames"]) == len(track["frame_sizes"])
