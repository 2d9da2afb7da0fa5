"""
What the fault suite patches out, tested once as it ships: the back-off's exponent and jitter, and a
video body shorter than its Content-Length (issue 11 item 21).
"""

from __future__ import annotations

import itertools

import pytest

from airflow_provider_luma.errors import LumaConnectionError
from airflow_provider_luma.hooks.luma import LumaHook


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def test_the_back_off_doubles_with_jitter_between_attempts(luma_conn):
    generation = LumaHook().create_generation("a patient fox")
    spreads = []
    for _ in range(2):
        luma_conn.inject_fault("503", endpoint="get", times=3)
        before = len(luma_conn.requests("get"))
        assert LumaHook().get_generation(generation.id).id == generation.id  # the 4th attempt gets through
        times = [r["time"] for r in luma_conn.requests("get")[before:]]
        assert len(times) == 4, times
        first, second, third = gaps(times)
        # wait_exponential(0.5) + wait_random(0, 0.5): 0.5-1.0 s, 1.0-1.5 s, 2.0-2.5 s (slack: a busy machine).
        assert 0.5 <= first < 1.0 + 1.0, times
        assert 1.0 <= second < 1.5 + 1.0, times
        assert 2.0 <= third < 2.5 + 1.0, times
        spreads.append((first - 0.5, second - 1.0, third - 2.0))
    # The jitter part is random: two runs of three waits do not land on the same values.
    assert spreads[0] != spreads[1]


def test_a_video_shorter_than_its_content_length_is_retried_then_written_whole(luma_conn, tmp_path):
    hook = LumaHook()
    done = hook.wait_for_generation(hook.create_generation("a short fox"), timeout=30)
    luma_conn.inject_fault("short_body", endpoint="video")
    path = hook.download_video(done.to_dict(), tmp_path / "videos/")
    assert path.read_bytes()[4:8] == b"ftyp"
    assert [r["fault"] for r in luma_conn.requests("video")] == ["short_body", None]


def test_a_video_always_shorter_than_its_content_length_fails_and_leaves_nothing(luma_conn, tmp_path):
    hook = LumaHook()
    done = hook.wait_for_generation(hook.create_generation("a cut fox"), timeout=30)
    luma_conn.inject_fault("short_body", endpoint="video", times=10)
    with pytest.raises(LumaConnectionError, match=f"while downloading the video of generation {done.id}"):
        hook.download_video(done.to_dict(), tmp_path / "videos/", max_retries=1)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no half-written file under any name
    assert len(luma_conn.requests("video")) == 2
