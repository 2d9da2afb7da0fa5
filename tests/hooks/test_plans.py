"""
The plans of calls, stepped with scripted answers and no server (as h11 tests its state machine):
what each plan asks, in what order, and what it makes of each answer or error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from airflow_provider_luma.create_requests import build_create_request
from airflow_provider_luma.errors import (
    LumaError,
    LumaResponseError,
    LumaRouteNotFoundError,
    LumaValidationError,
)
from airflow_provider_luma.hooks import endpoints
from airflow_provider_luma.hooks.plans import Answer, Call, Plan, _Done, next_call
from airflow_provider_luma.hooks.settings import LumaSettings
from airflow_provider_luma.models import ApiFamily, GenerationRef, GenerationState

SETTINGS = LumaSettings(
    conn_id="plans", base_url="http://127.0.0.1:9", api_key="sk-plans-0123456789", ids_per_request=2
)
COMPLETED = GenerationState.COMPLETED


def step(plan: Plan[Any], replies: Iterable[Any]) -> tuple[list[Call], Any]:
    """
    Drive ``plan`` by hand: each reply (a payload, an :class:`Answer`, or a :class:`LumaError` to throw
    in) answers the next call it yields. The calls it made and its result; a call left unanswered fails.
    """
    calls: list[Call] = []
    reply: Answer | LumaError | None = None
    scripted = iter(replies)
    try:
        while True:
            call = next_call(plan, reply)
            calls.append(call)
            try:
                value = next(scripted)
            except StopIteration:
                raise AssertionError(f"the plan made a call the script does not answer: {call}") from None
            if isinstance(value, LumaError):
                reply = value
            else:
                answer = value if isinstance(value, Answer) else Answer(value, 0.0)
                reply = Answer(call.parse(answer.payload) if call.parse else answer.payload, answer.seconds)
    except _Done as done:
        return calls, done.value


def query(call: Call) -> dict[str, list[str]]:
    """A ``luma-ai`` call's query, name by name."""
    found: dict[str, list[str]] = {}
    for name, value in call.params:
        found.setdefault(name, []).append(value)
    return found


def refs(*ids: str, api: ApiFamily = ApiFamily.LUMA_AI) -> list[GenerationRef]:
    return [GenerationRef(i, api) for i in ids]


# -- the chunking rule ---------------------------------------------------------------------------------


def test_every_chunk_of_a_luma_ai_fetch_is_its_own_held_plan():
    plans = endpoints.fetch_plans(SETTINGS, refs("a", "b", "c", "d", "e"), COMPLETED, deadline=99.0)
    assert len(plans) == 3  # ids_per_request=2
    for plan, ids in zip(plans, (["a", "b"], ["c", "d"], ["e"]), strict=True):
        answer = [{"id": i, "state": "completed"} for i in ids]
        (call,), generations = step(plan, [Answer(answer, 30.0)])
        assert call.path == endpoints.LUMA_AI_GENERATIONS_PATH
        assert query(call)["generation_ids[]"] == ids
        assert query(call)["status"] == ["completed"]  # held: the schema's name for the multi fetch
        assert call.deadline == 99.0
        assert [g.id for g in generations] == ids


def test_one_luma_ai_id_is_a_single_fetch_and_universal_ids_are_never_held():
    plans = endpoints.fetch_plans(SETTINGS, [*refs("v1", "v2", api=ApiFamily.VIDEO), *refs("a")], COMPLETED)
    assert len(plans) == 3
    calls = [step(plan, [{"id": i, "state": "queued"}])[0][0] for plan, i in zip(plans, ["v1", "v2", "a"], strict=True)]
    assert [c.path for c in calls] == [endpoints.VIDEO_GENERATIONS_PATH] * 2 + [endpoints.LUMA_AI_GENERATION_PATH]
    assert calls[0].params == {"generation_id": "v1"}  # no hold parameter on the universal endpoint
    assert query(calls[2])["state"] == ["completed"]


def test_a_per_call_retry_override_reaches_every_call():
    plans = endpoints.fetch_plans(SETTINGS, refs("a", "b", "c"), None, retries=0)
    assert all(step(plan, [[]])[0][0].max_retries == 0 for plan in plans)
    (call,), _ = step(endpoints.fetch_plan(SETTINGS, refs("a")[0]), [{"id": "a"}])
    assert call.max_retries is None  # the connection's


# -- the hold parameter, learned -------------------------------------------------------------------------


def test_a_strict_server_refusing_the_name_is_asked_again_with_the_other():
    refused = LumaValidationError("rejected", http_status=400)
    refused.server_message = "Query validation error! property state should not exist"
    calls, generation = step(
        endpoints.fetch_plan(SETTINGS, refs("a")[0], COMPLETED), [refused, Answer({"id": "a", "state": "queued"}, 30)]
    )
    assert [list(query(c)) for c in calls] == [["generation_id", "state"], ["generation_id", "status"]]
    assert generation.state == "queued"
    # Remembered for the process (per server and fetch): the next poll starts with the name that worked.
    calls, _ = step(endpoints.fetch_plan(SETTINGS, refs("a")[0], COMPLETED), [{"id": "a"}])
    assert "status" in query(calls[0])


def test_a_refusal_that_does_not_name_the_parameter_is_the_error():
    refused = LumaValidationError("rejected", http_status=400)
    refused.server_message = "generation_id must be a UUID"
    with pytest.raises(LumaValidationError):
        step(endpoints.fetch_plan(SETTINGS, refs("a")[0], COMPLETED), [refused])


# -- create ---------------------------------------------------------------------------------------------


def test_a_create_falls_back_to_the_universal_endpoint_when_the_luma_ai_routes_are_gone():
    gone = LumaRouteNotFoundError("Cannot POST /v2/generate/video/luma-ai/generation", http_status=404)
    calls, generation = step(
        endpoints.create_plan(SETTINGS, build_create_request("a fox", model="ray-2")),
        [gone, {"id": "u1:luma/ray-2", "status": "queued"}],
    )
    assert [c.path for c in calls] == [endpoints.LUMA_AI_GENERATION_PATH, endpoints.VIDEO_GENERATIONS_PATH]
    assert calls[1].body["model"] == "luma/ray-2"
    assert generation.api is ApiFamily.VIDEO
    assert endpoints.luma_ai_gone(SETTINGS)
    calls, _ = step(endpoints.create_plan(SETTINGS, build_create_request("again")), [{"id": "u2", "status": "queued"}])
    assert [c.path for c in calls] == [endpoints.VIDEO_GENERATIONS_PATH]  # remembered: one call


@pytest.mark.parametrize("answer", [{"id": "bad id"}, {"id": "x\ud83d"}, {"id": "7" * 500}, {"state": "queued"}])
def test_a_create_answer_without_a_usable_id_is_paid_for_and_says_so(answer):
    with pytest.raises(LumaResponseError) as raised:
        step(endpoints.create_plan(SETTINGS, build_create_request("a fox")), [answer])
    assert raised.value.maybe_created
