"""The call budget's queue and its 429 pause end at a call's deadline (issue 19 item 2): ``BudgetTimeout``."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_luma.hooks.budget import BudgetTimeout, CallBudget
from tests.support.deployment import airflow_version

#: The transport alone (requests, aiohttp, urllib3: the same versions in every lock), no Airflow code:
#: timed, so run on the newest Airflow line only, as CI's allowance asks.
pytestmark = pytest.mark.skipif(airflow_version() < (3, 3), reason="Airflow-independent and timed: run once, on 3.3+")

#: A deadline in seconds, and the slack every bound gets on a loaded machine (timed by nature).
DEADLINE = 2.0
SLACK = 5.0


def paused_for_a_minute() -> CallBudget:
    budget = CallBudget(rate=5, burst=0)
    slot = budget.acquire()
    budget.release(slot, 429, retry_after=60)  # every call on the key now waits 60 s
    return budget


def test_a_paused_budget_gives_up_at_the_deadline():
    budget = paused_for_a_minute()
    started = time.monotonic()
    with pytest.raises(BudgetTimeout):
        budget.acquire(deadline=time.time() + DEADLINE)
    assert DEADLINE - 0.5 <= time.monotonic() - started < DEADLINE + SLACK
    assert budget.schedule.waiting == 0  # it left the queue


def test_a_paused_budget_gives_up_at_the_deadline_on_the_event_loop():
    budget = paused_for_a_minute()
    started = time.monotonic()
    with pytest.raises(BudgetTimeout):
        asyncio.run(budget.aacquire(deadline=time.time() + DEADLINE))
    assert time.monotonic() - started < DEADLINE + SLACK
    assert budget.schedule.waiting == 0


def test_the_queue_ends_at_the_deadline_and_a_past_deadline_does_not_wait():
    budget = CallBudget(rate=0.1, burst=0)  # one call per 10 s
    budget.acquire()
    started = time.monotonic()
    with pytest.raises(BudgetTimeout):
        budget.acquire(deadline=time.time() + DEADLINE)
    with pytest.raises(BudgetTimeout):
        budget.acquire(deadline=time.time() - 1)
    assert time.monotonic() - started < DEADLINE + SLACK
    assert isinstance(BudgetTimeout("x"), TimeoutError)


def test_a_call_that_may_start_at_once_ignores_its_deadline():
    assert CallBudget(rate=5, burst=1).acquire(deadline=time.time() - 1) is not None
