"""
The steps a wait decides (:mod:`airflow_provider_luma.waiting`) and its drivers carry out: poll,
sleep, check, and the ending (:class:`Finished`) that :mod:`airflow_provider_luma.outcome` turns
into what Airflow gets. Plain values: no I/O, no decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from airflow_provider_luma import outcome
from airflow_provider_luma.errors import LumaError
from airflow_provider_luma.models import ApiFamily, Generation, GenerationRef, GenerationState

WaitStatus = Literal["success", "failed", "timeout", "error"]


@dataclass(frozen=True)
class Poll:
    """
    Fetch ``refs`` (all of one endpoint family), giving up at ``deadline`` (UNIX time).

    With ``hold`` it is a long poll for ``target``; without, the API answers at once. How the ids
    are split into calls, and that every call of a poll is held at once, is
    :func:`airflow_provider_luma.hooks.endpoints.poll_plans`' rule.

    :param retries: Retries of each call instead of the connection's ``max_retries`` (``0``: a quick
        look that leaves transient errors to a later check); ``None``: the connection's.
    """

    refs: tuple[GenerationRef, ...]
    target: GenerationState
    deadline: float | None
    hold: bool = True
    retries: int | None = None

    @property
    def api(self) -> ApiFamily:
        """The endpoint family of the generations polled."""
        return self.refs[0].api or ApiFamily.LUMA_AI

    @property
    def generation_ids(self) -> list[str]:
        """The ids polled, in order."""
        return [ref.id for ref in self.refs]


@dataclass(frozen=True)
class Sleep:
    """Pause for ``seconds`` before the next step."""

    seconds: float


@dataclass(frozen=True)
class Finished:
    """
    The wait is over.

    :param status: ``success``, ``failed`` (a generation failed), ``timeout`` or ``error``.
    :param message: One sentence for logs and task failures.
    :param generations: The latest known state of every generation waited for, in order.
    :param error: The permanent error that ended the wait, for ``error``.
    """

    status: WaitStatus
    message: str
    generations: list[Generation] = field(default_factory=list)
    error: LumaError | None = None

    def result(self) -> list[Generation]:
        """The generations on success; otherwise raise the matching :class:`LumaError` (see :func:`.outcome.settle`)."""
        return outcome.settle(self, role="hook")


Step = Poll | Sleep | Finished


@dataclass(frozen=True)
class Check:
    """One check of a poke: poll every family once (long polls held when ``hold``), after ``pause`` seconds."""

    hold: bool
    pause: float = 0.0
