"""How a test drives the simulator: the methods of :class:`~.LumaSimulator` and the ``/_sim/`` HTTP API.

:class:`SimulatorControls` holds the methods (``script``, ``set_state``, ``inject_fault``, ``configure``,
``reset``, ``requests``, ``count``, ``generations`` ...); :func:`control_routes` serves the same methods over
HTTP on the API origin, with no auth and not logged, for tests whose DAG runs in another process; and
:class:`~.client.SimulatorClient` calls them from Python over that HTTP API. Every argument is checked
before anything changes: a wrong value is a ``ValueError`` here and a 400 (``{"ok": false, "error"}``)
there, never a later request's 500.

HTTP API: ``GET /_sim/health``, ``GET /_sim/requests`` (``?endpoint=``), ``GET /_sim/generations``,
``GET /_sim/generations/{id}``, ``POST /_sim/script`` (the arguments of :meth:`~SimulatorControls.script`),
``DELETE /_sim/script``, ``POST /_sim/faults`` (those of :meth:`~SimulatorControls.inject_fault`),
``DELETE /_sim/faults``, ``POST /_sim/state`` (``{"id", "state", "failure_reason"}``), ``POST /_sim/config``
(any option ``/_sim/config`` may change, see :mod:`.options`; answers the current values),
``POST /_sim/reset``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web

from airflow_provider_luma.testing.checks import Choice, Maybe, Number, Text
from airflow_provider_luma.testing.family import Family
from airflow_provider_luma.testing.faults import FaultQueue, make_fault
from airflow_provider_luma.testing.options import Settings
from airflow_provider_luma.testing.requestlog import RequestLog
from airflow_provider_luma.testing.store import STATES, Generation, Rule, Store
from airflow_provider_luma.testing.wire import BodyError, parse_body

__all__ = ["SimulatorControls", "control_routes"]

_SECONDS = Maybe(Number(0, 86_400))


def _checked(name: str, check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


class SimulatorControls:
    """The methods a test scripts and inspects the simulator with (a base of :class:`~.LumaSimulator`)."""

    store: Store
    log: RequestLog
    faults: FaultQueue
    settings: Settings
    #: Endpoint names a fault can target (every family's, ``video`` and ``any``).
    fault_endpoints: tuple[str, ...]

    def family_of(self, gen: Generation) -> Family:
        """The family that made ``gen`` (renders it)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ scripting

    def script(
        self,
        prompt_contains: str,
        *,
        outcome: Literal["completed", "failed"] = "completed",
        failure_reason: str = "simulated failure",
        queued_seconds: float | None = None,
        dreaming_seconds: float | None = None,
    ) -> None:
        """Script generations whose prompt contains ``prompt_contains``.

        The first matching rule applies; ``None`` durations use the simulator defaults.

        :param prompt_contains: Text the prompt must contain.
        :param outcome: ``"completed"`` or ``"failed"``.
        :param failure_reason: The reason a failed one gives.
        :param queued_seconds: Its time ``queued`` (None: the ``queued_seconds`` option).
        :param dreaming_seconds: Its time ``dreaming`` (None: the ``dreaming_seconds`` option).
        """
        rule = Rule(
            _checked("prompt_contains", Text(), prompt_contains),
            _checked("outcome", Choice("completed", "failed"), outcome),
            _checked("failure_reason", Text(), failure_reason),
            _checked("queued_seconds", _SECONDS, queued_seconds),
            _checked("dreaming_seconds", _SECONDS, dreaming_seconds),
        )
        self.store.add_rule(rule)

    def clear_scripts(self) -> None:
        """Forget all script rules."""
        self.store.clear_rules()

    def set_state(self, generation_id: str, state: str, failure_reason: str | None = None) -> None:
        """Force a generation into ``state``, freezing its timeline, and wake waiters.

        :param generation_id: The generation's id (``KeyError`` if unknown).
        :param state: One of ``queued``, ``dreaming``, ``completed``, ``failed``.
        :param failure_reason: The reason a ``failed`` generation gives (default "simulated failure"); any
            text, kept as it is (a test may send a hostile one).
        """
        _checked("state", Choice(*STATES), state)
        _checked("failure_reason", Maybe(Text()), failure_reason)
        self.store.set_state(_checked("generation_id", Text(), generation_id), state, failure_reason)

    def inject_fault(
        self,
        kind: str,
        *,
        endpoint: str = "any",
        times: int = 1,
        retry_after: float | str | None = None,
        delay: float | None = None,
        after: bool = False,
    ) -> None:
        """Queue a fault for the next ``times`` requests to ``endpoint``.

        :param kind: One of :data:`~.faults.FAULT_KINDS`.
        :param endpoint: One of :data:`~.simulator.ENDPOINTS`: ``create``, ``get``, ``list``,
            ``video_create``, ``video_get``, ``video`` or ``any``. ``short_body`` and ``tiny_video`` only
            hit ``video`` (so only ``video`` or ``any`` are accepted).
        :param times: How many matching requests it hits; faults are consumed FIFO.
        :param retry_after: ``Retry-After`` header value for ``429`` (none if unset).
        :param delay: Seconds a ``slow`` fault sleeps (default 5).
        :param after: Apply the fault after the request took effect (e.g. a create that made a
            generation but whose answer was lost) rather than before.
        """
        self.faults.add(make_fault(kind, endpoint, times, retry_after, delay, after, endpoints=self.fault_endpoints))

    def clear_faults(self) -> None:
        """Forget queued faults and switch random faults off."""
        self.faults.clear()
        self.settings.update({"fault_rate": 0.0})

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change options while running (checked, all or none); return the current values.

        :param changes: Options ``/_sim/config`` may change (see :data:`~.options.OPTIONS`); an
            :class:`~.options.OptionError` (a ``ValueError``) names the first refused one.
        """
        self.settings.update(changes, live_only=True)
        return self.settings.snapshot()

    def reset(self) -> None:
        """Forget generations, scripts, faults (also ``fault_rate``) and the request log."""
        self.faults.clear()
        self.settings.update({"fault_rate": 0.0})
        self.log.clear()
        self.store.clear()

    # ------------------------------------------------------------------ inspection

    def requests(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """Copies of the logged requests, optionally only those to ``endpoint``.

        Entries are appended when answered; ``/_sim/`` control calls are not logged. Keys: ``time``
        (arrival), ``method``, ``path``, ``endpoint``, ``query``, ``status`` (0: connection dropped),
        ``authorization`` (``"Bearer ***"`` or None, never the key), ``peer`` (client port), ``fault``,
        ``elapsed``, ``held`` (seconds a fetch was held), ``released_by`` (``"state"``, ``"timeout"``,
        ``"immediate"``, ``"shutdown"``, or None when not a fetch or answered with an error) and, for
        requests with a body, ``body`` (its text, at most 4,096 characters) and ``json`` (its value;
        None if it was not valid JSON or over 64 KiB). Texts are bounded (see :mod:`.requestlog`).

        :param endpoint: Only entries of this endpoint (one of :data:`~.simulator.LOG_ENDPOINTS`).
        """
        return self.log.entries(endpoint)

    def count(self, endpoint: str | None = None) -> int:
        """How many requests (to ``endpoint``, if given) were answered.

        :param endpoint: Only requests to this endpoint.
        """
        return self.log.count(endpoint)

    def generation(self, generation_id: str) -> dict[str, Any]:
        """The generation as its family's fetch would return it now (``KeyError`` if unknown).

        :param generation_id: Its id.
        """
        with self.store.lock:
            gen = self.store.get(generation_id)
            if gen is None:
                raise KeyError(generation_id)
            return self.family_of(gen).render(gen, time.time())

    def generations(self) -> list[dict[str, Any]]:
        """All generations as their family's fetch would return them, oldest first."""
        now = time.time()
        with self.store.lock:
            return [self.family_of(g).render(g, now) for g in self.store.all()]


# ---------------------------------------------------------------- over HTTP

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _ok(**extra: Any) -> web.Response:
    return web.json_response({"ok": True, **extra})


def _refused(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message[:2000]}, status=status)


async def _object(request: web.Request) -> dict[str, Any]:
    try:
        data = parse_body(await request.read(), finite=False)
    except BodyError as exc:
        raise ValueError(f"expected a JSON object ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def _calling(action: Callable[[dict[str, Any], web.Request], Any]) -> Handler:
    """A handler calling ``action(body, request)``: its result as JSON; its refusals as 400/404."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            data = await _object(request) if request.method in ("POST", "PUT") else {}
            result = action(data, request)
        except KeyError as exc:
            return _refused(404, f"unknown generation {exc}")
        except (TypeError, ValueError) as exc:
            return _refused(400, str(exc))
        return result if isinstance(result, web.StreamResponse) else _ok(**(result or {}))

    return handle


def control_routes(sim: SimulatorControls, health: Callable[[], dict[str, Any]]) -> list[tuple[str, str, Handler]]:
    """The ``/_sim/`` routes as ``(method, path, handler)``, each calling the method of the same name."""

    def state(data: dict[str, Any], _: web.Request) -> None:
        unexpected = sorted(set(data) - {"id", "generation_id", "state", "failure_reason"})
        if unexpected:
            raise ValueError(f"unexpected keys {unexpected}")
        gen_id = data.get("id") or data.get("generation_id")
        sim.set_state(gen_id, data.get("state"), data.get("failure_reason"))  # type: ignore[arg-type]

    def requests(_: dict[str, Any], request: web.Request) -> web.Response:
        return web.json_response(sim.requests(request.query.get("endpoint")))

    return [
        ("GET", "/_sim/health", _calling(lambda _, __: health())),
        ("GET", "/_sim/requests", _calling(requests)),
        ("GET", "/_sim/generations", _calling(lambda _, __: web.json_response(sim.generations()))),
        (
            "GET",
            "/_sim/generations/{id:.+}",
            _calling(lambda _, r: web.json_response(sim.generation(r.match_info["id"]))),
        ),
        ("POST", "/_sim/script", _calling(lambda data, _: sim.script(**data))),
        ("DELETE", "/_sim/script", _calling(lambda _, __: sim.clear_scripts())),
        ("POST", "/_sim/faults", _calling(lambda data, _: sim.inject_fault(**data))),
        ("DELETE", "/_sim/faults", _calling(lambda _, __: sim.clear_faults())),
        ("POST", "/_sim/state", _calling(state)),
        ("POST", "/_sim/config", _calling(lambda data, _: sim.configure(**data))),
        ("POST", "/_sim/reset", _calling(lambda _, __: sim.reset())),
    ]
