"""The waiting rules themselves (pure: no I/O, no sleeping), shared by the hook, the trigger and the sensor."""

from __future__ import annotations

from airflow_provider_luma.errors import LumaServerError
from airflow_provider_luma.models import ApiFamily, Generation, GenerationRef, GenerationState
from airflow_provider_luma.waiting import MISSING_ANSWERS_LIMIT, Finished, Poll, Sleep, WaitLoop, WaitPacing


def gen(generation_id: str, state: str, reason: str | None = None) -> Generation:
    return Generation(id=generation_id, state=state, failure_reason=reason)


def refs(*ids: str) -> list[GenerationRef]:
    return [GenerationRef(i, ApiFamily.LUMA_AI) for i in ids]


def loop(ids=("a", "b"), deadline=1e12, now=lambda: 1000.0) -> WaitLoop:
    return WaitLoop(refs(*ids), GenerationState.COMPLETED, deadline=deadline, pacing=WaitPacing(), clock=now)


def test_an_id_the_answers_keep_leaving_out_ends_the_wait():
    wait = loop()
    step = wait.first_step()
    for _ in range(MISSING_ANSWERS_LIMIT - 1):
        step = wait.after_poll([gen("a", "dreaming")], call_seconds=30)
        assert not isinstance(step, Finished)
    step = wait.after_poll([gen("a", "dreaming")], call_seconds=30)
    assert isinstance(step, Finished)
    assert step.status == "error"
    assert "b" in step.message


def test_polls_only_what_is_pending_and_fails_on_failed():
    wait = loop()
    assert wait.first_step() == Poll(tuple(refs("a", "b")), GenerationState.COMPLETED, 1e12)
    step = wait.after_poll([gen("a", "completed"), gen("b", "dreaming")], call_seconds=30)
    assert step == Poll(tuple(refs("b")), GenerationState.COMPLETED, 1e12)
    step = wait.after_poll([gen("b", "failed", "nsfw")], call_seconds=1)
    assert isinstance(step, Finished)
    assert (step.status, "nsfw" in step.message) == ("failed", True)


def test_an_early_answer_below_the_target_is_spaced_out():
    wait = loop(ids=["a"])
    step = wait.after_poll([gen("a", "queued")], call_seconds=0.1)
    assert isinstance(step, Sleep)
    assert abs(step.seconds - (WaitPacing().min_poll_interval - 0.1)) < 1e-9


def test_transient_errors_back_off_up_to_the_cap_and_never_past_the_deadline():
    wait = WaitLoop(
        refs("a"), GenerationState.COMPLETED, deadline=1000.0 + 45, pacing=WaitPacing(), clock=lambda: 1000.0
    )
    delays = [wait.after_poll(LumaServerError("boom"), call_seconds=1).seconds for _ in range(10)]
    assert delays[0] <= 1.0
    assert max(delays) <= 45  # the deadline, before the 60 s cap
    assert delays[-1] >= 22.5


def test_an_unknown_state_is_not_terminal():
    wait = loop(ids=["a"])
    assert not isinstance(wait.after_poll([gen("a", "rendering")], call_seconds=30), Finished)
