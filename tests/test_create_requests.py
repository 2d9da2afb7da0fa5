"""The create request for Luma's own Dream Machine API: the same DAG's parameters, written as Luma asks.

Pure functions: no server. What reaches the simulator's Dream Machine family is checked there too
(``test_every_mapped_body_is_accepted_by_the_dream_machine_family``).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests

from airflow_provider_luma.create_requests import (
    DREAM_MACHINE_EQUIVALENTS,
    DREAM_MACHINE_MODELS,
    UNIVERSAL_EQUIVALENTS,
    build_create_request,
    dream_machine_body,
    to_universal,
)
from airflow_provider_luma.errors import LumaInputError
from airflow_provider_luma.testing import DREAM_MACHINE_MODELS as SIMULATED_MODELS
from airflow_provider_luma.testing import LumaSimulator
from tests.support.simulator_calls import DM_VIDEO, auth

IMAGE = {"frame0": {"type": "image", "url": "https://example.com/a.jpg"}}

# (model, parameters as a DAG gives them, Luma's body besides the prompt)
HOOK = "https://example.com/hook"
SAME_DAGS: list[tuple[str | None, dict[str, Any], dict[str, Any]]] = [
    ("luma/ray-flash-2", {"duration": 5}, {"model": "ray-flash-2", "duration": "5s"}),
    (
        "luma/ray-2",
        {"duration": "9", "resolution": "4k", "aspect_ratio": "21:9"},
        {"model": "ray-2", "duration": "9s", "resolution": "4k", "aspect_ratio": "21:9"},
    ),
    ("luma/ray-2", {"loop": "true", "keyframes": IMAGE}, {"model": "ray-2", "loop": True, "keyframes": IMAGE}),
    ("luma/ray-1-6", {"aspect_ratio": "4:3"}, {"model": "ray-1-6", "aspect_ratio": "4:3"}),
    ("ray-flash-2", {"duration": "5s"}, {"model": "ray-flash-2", "duration": "5s"}),
    ("ray-2", {"duration": 9, "callback_url": HOOK}, {"model": "ray-2", "duration": "9s", "callback_url": HOOK}),
    ("ray-1-6", {"resolution": "720p"}, {"model": "ray-1-6", "resolution": "720p"}),
    (None, {}, {"model": "ray-2"}),
]


@pytest.mark.parametrize(("model", "parameters", "expected"), SAME_DAGS)
def test_the_same_dag_parameters_become_lumas_body(
    model: str | None, parameters: dict[str, Any], expected: dict[str, Any]
) -> None:
    body = dream_machine_body(build_create_request("a fox in snow", model=model, **parameters))
    assert body == {"prompt": "a fox in snow", **expected}
    assert list(body)[:2] == ["prompt", "model"]


def test_the_mapping_is_the_routes_gone_fallback_backwards() -> None:
    assert set(DREAM_MACHINE_MODELS) == set(SIMULATED_MODELS)
    assert set(DREAM_MACHINE_EQUIVALENTS.values()) == set(DREAM_MACHINE_MODELS)
    for luma_ai, universal in UNIVERSAL_EQUIVALENTS.items():
        if luma_ai is not None:
            assert DREAM_MACHINE_EQUIVALENTS[universal] == luma_ai
    # Forward to the universal endpoint and back to Luma's API: the same body.
    request = build_create_request("x", model="ray-flash-2", duration="9s", aspect_ratio="1:1", loop=False)
    assert dream_machine_body(to_universal(request)) == dream_machine_body(request)


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"model": "luma/ray-3.2"}, "Agents API"),
        ({"model": "luma/ray-3.2", "hdr": True}, "Agents API"),
        ({"model": "luma/ray-3.2", "edit_type": "video_reframe", "source_video_url": "https://e.com/v.mp4"}, "ray-3.2"),
    ],
)
def test_what_lumas_api_cannot_do_is_a_clear_error(parameters: dict[str, Any], named: str) -> None:
    request = build_create_request("x", cross_checks=False, **parameters)
    with pytest.raises(LumaInputError, match=named) as raised:
        dream_machine_body(request)
    assert "AI/ML API connection" in str(raised.value)


def test_a_newer_luma_model_goes_without_its_prefix_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_luma.create_requests")
    request = build_create_request("x", model="luma/ray-9-test-dm", hdr=True)
    assert dream_machine_body(request) == {"prompt": "x", "model": "ray-9-test-dm", "hdr": True}
    dream_machine_body(request)
    said = [r.getMessage() for r in caplog.records if "Luma's API" in r.getMessage()]
    assert len(said) == 1
    assert "'ray-9-test-dm'" in said[0]


def test_the_request_is_not_changed() -> None:
    request = build_create_request("x", model="luma/ray-2", duration=5)
    dream_machine_body(request)
    assert dict(request.body) == {"prompt": "x", "model": "luma/ray-2", "duration": 5}


def test_every_mapped_body_is_accepted_by_the_dream_machine_family() -> None:
    with LumaSimulator(queued_seconds=60) as sim:
        for model, parameters, _ in SAME_DAGS:
            body = dream_machine_body(build_create_request("a fox", model=model, **parameters))
            r = requests.post(sim.base_url + DM_VIDEO, json=body, headers=auth(sim), timeout=5)
            assert r.status_code == 201, (body, r.text)
        assert [e["json"]["model"] for e in sim.requests("dm_create")] == [
            expected["model"] for *_, expected in SAME_DAGS
        ]
