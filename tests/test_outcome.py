"""
The outcome module's rules, one by one: what is made storable and how, the event schema and the
reading of 0.2.0's events, redaction, and the one table from an ending to Airflow's exceptions.
"""

from __future__ import annotations

import json

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

from airflow_provider_luma import outcome
from airflow_provider_luma.errors import LumaError, LumaGenerationFailedError, LumaNotFoundError, LumaWaitTimeoutError
from airflow_provider_luma.models import ApiFamily, Generation, GenerationRef, GenerationState
from airflow_provider_luma.waiting import Check, Finished, Wait, WaitPacing

KEY = "sk-outcome-7f3a9c21e5"


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("cut inside an emoji \ud83d", "cut inside an emoji \ufffd"),
        ("\ud83d\ude00 joined", "\U0001f600 joined"),  # a pair split in two code points is one character
        ("NUL \x00 here", "NUL \ufffd here"),
        ("plain", "plain"),
    ],
)
def test_text_becomes_valid_utf8_without_nul(text, stored):
    assert outcome.storable_text(text) == stored
    stored.encode("utf-8")


def test_long_text_is_cut_on_a_character_with_a_marker():
    cut = outcome.storable_text("é" * 3000, 100)
    assert len(cut.encode("utf-8")) <= 100
    assert cut.endswith(outcome.TRUNCATED)


def test_numbers_become_what_json_and_msgpack_hold():
    value = outcome.storable(
        {"big": 2**70, "small": -(2**64), "ok": 2**63 - 1, "inf": float("inf"), "nan": float("nan")}
    )
    assert value == {"big": str(2**70), "small": str(-(2**64)), "ok": 2**63 - 1, "inf": None, "nan": None}
    json.dumps(value, allow_nan=False)


def test_nesting_is_cut_at_the_documented_depth():
    deep: list = []
    for _ in range(50):
        deep = [deep]
    value = outcome.storable({"x": deep})
    for _ in range(outcome.MAX_DEPTH - 1):
        value = value["x"] if isinstance(value, dict) else value[0]
    assert outcome.DEPTH_MARKER in json.dumps(value)


def test_keys_are_redacted_everywhere_they_are_remembered():
    outcome.remember_secret(KEY)
    assert outcome.redact(f"Bearer {KEY} refused") == "Bearer *** refused"
    assert outcome.storable({f"k{KEY}": [f"v {KEY}"]}) == {"k***": ["v ***"]}
    assert outcome.message(f"short {KEY}") == "short ***"
    outcome.remember_secret("abc")  # too short to look for: every message would lose its letters
    assert outcome.redact("abcdef") == "abcdef"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@api.example.com:8443/v2?token=t#f", "https://api.example.com:8443/v2"),
        ("https://api.example.com/?x=1", "https://api.example.com/"),
        ("api.example.com?token=t", "api.example.com"),
    ],
)
def test_a_url_is_shown_without_userinfo_query_or_fragment(url, shown):
    assert outcome.safe_url(url) == shown


def generation(**fields) -> Generation:
    return Generation.from_api({"id": "g1", "state": "failed", **fields}, api=ApiFamily.LUMA_AI)


def test_the_event_is_versioned_compact_and_bounded():
    g = generation(failure_reason="x" * 50_000, extra={"deep": list(range(1000))}, meta={"usage": {"n": 2**70}})
    event = outcome.event_of(Finished("failed", "m" * 50_000, [g]))
    assert event["v"] == outcome.EVENT_SCHEMA == 1
    (item,) = event["generations"]
    assert set(item) == {*outcome.EVENT_FIELDS, "usage"}  # unknown answer fields left out
    assert item["usage"] == {"n": str(2**70)}
    assert len(item["failure_reason"].encode()) <= outcome.MAX_REASON_BYTES
    assert outcome.json_bytes(item) <= outcome.MAX_EVENT_GENERATION_BYTES
    assert len(event["message"].encode()) <= outcome.MAX_MESSAGE_BYTES


def test_an_event_of_0_2_0_reads_as_one_of_this_schema():
    old = {
        "status": "success",
        "message": "1 reached",
        "generations": [{"id": "g1", "state": "completed", "api": "video"}],
    }
    read = outcome.read_event(old)
    assert (read.status, read.message, read.generations[0].api) == ("success", "1 reached", ApiFamily.VIDEO)
    assert outcome.read_event({**old, "v": 2, "new_field": 1}).status == "success"  # a later schema: what it knows
    assert outcome.read_event(None).status == "error"
    assert outcome.read_event({"status": "exploded"}).status == "error"


FAILED = Finished("failed", "Luma generation failed (g1: moderation).", [generation(failure_reason="moderation")])


@pytest.mark.parametrize(
    ("finished", "role", "raised"),
    [
        (FAILED, "sensor", AirflowFailException),
        (FAILED, "generate", LumaGenerationFailedError),
        (FAILED, "hook", LumaGenerationFailedError),
        (Finished("timeout", "late"), "sensor", AirflowSensorTimeout),
        (Finished("timeout", "late"), "generate", LumaWaitTimeoutError),
        (Finished("error", "gone", error=LumaNotFoundError("gone")), "sensor", LumaNotFoundError),
        (Finished("error", "no reason"), "generate", LumaError),
    ],
)
def test_one_table_maps_each_ending_to_an_exception(finished, role, raised):
    with pytest.raises(raised):
        outcome.settle(finished, role=role)
    with pytest.raises(AirflowSkipException):
        outcome.settle(finished, role="sensor", soft_fail=True)
    assert role in outcome.ROLES


def test_success_gives_the_generations_and_the_results_are_storable():
    done = Generation.from_api({"id": "g1", "state": "completed", "n": float("inf"), "s": "\ud800"})
    (settled,) = outcome.settle(Finished("success", "ok", [done]), role="generate")
    result = outcome.generation_result(settled, {"request_summary": {"prompt": "p"}})
    assert (result["n"], result["s"], result["request_summary"]) == (None, "\ufffd", {"prompt": "p"})
    assert outcome.sensor_result([settled], one=False)[0]["id"] == "g1"


def test_a_return_value_past_its_cap_keeps_the_events_fields():
    big = Generation.from_api({"id": "g1", "state": "completed", **{f"k{i}": "x" * 4000 for i in range(100)}})
    result = outcome.generation_result(big)
    assert result["truncated"] is True
    assert outcome.json_bytes(result) <= outcome.MAX_RESULT_BYTES


# -- the wait's rules of one poke ---------------------------------------------------------------------


def wait(report_progress: bool = False) -> Wait:
    refs = [GenerationRef("a", ApiFamily.LUMA_AI), GenerationRef("b", ApiFamily.LUMA_AI)]
    return Wait.of(refs, GenerationState.COMPLETED, deadline=None, pacing=WaitPacing(), report_progress=report_progress)


def test_a_fresh_poke_reporting_progress_holds_once_more_for_the_next_state():
    w = wait(report_progress=True)
    poke = w.poke(deadline=100.0, keeps_state=True)
    assert poke.first().hold
    w.loops[0].after_poll([Generation("a", "queued"), Generation("b", "queued")], 0.1)
    again = poke.after(None, now=1.0)
    assert again == Check(hold=True, pause=0.0)
    assert poke.after(None, now=2.0) is None  # once only


def test_a_poke_in_reschedule_mode_asks_again_for_left_out_ids_up_to_the_limit():
    w = wait()
    poke = w.poke(deadline=100.0, keeps_state=False)
    poke.first()
    w.loops[0].after_poll([Generation("a", "dreaming")], 30)  # the first answer leaves b out
    checks = 0
    while (check := poke.after(None, now=1.0)) is not None:
        w.loops[0].after_poll([Generation("a", "dreaming")], 30)  # b left out again
        assert (check.hold, check.pause) == (False, WaitPacing().min_poll_interval)
        checks += 1
    assert checks == 2  # with the first: MISSING_ANSWERS_LIMIT answers in all


def test_a_poke_in_poke_mode_leaves_left_out_ids_to_the_next_poke():
    w = wait()
    poke = w.poke(deadline=100.0, keeps_state=True)
    poke.first()
    w.loops[0].after_poll([Generation("a", "dreaming")], 30)
    assert poke.after(None, now=1.0) is None
    assert poke.after(None, now=200.0) is None  # and never past its deadline
