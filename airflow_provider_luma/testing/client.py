"""Drive a simulator that runs elsewhere (another process, a deployment) through its ``/_sim/`` HTTP API.

:class:`SimulatorClient` has the methods of :class:`~.control.SimulatorControls`, with the same arguments
and the same errors (``ValueError`` for a refused argument, ``KeyError`` for an unknown generation), so a
test reads the same whether its simulator is in-process or not::

    from airflow_provider_luma.testing.process import SimulatorProcess

    with SimulatorProcess(["--hold", "1"]) as server:
        server.client.script("storm", outcome="failed")
        server.client.inject_fault("503", endpoint="create")
        print(server.client.count("create"), server.client.generations())

Only the standard library is used (``urllib``); the control API needs no key.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Literal

__all__ = ["SimulatorClient"]


class SimulatorClient:
    """
    The ``/_sim/`` API of a running simulator, as Python methods.

    :param base_url: The simulator's API origin, e.g. ``http://127.0.0.1:8089``.
    :param timeout: Seconds each call may take.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            if exc.code == 404:
                raise KeyError(message) from None
            raise ValueError(message) from None

    def health(self) -> dict[str, Any]:
        """``{"ok", "base_url", "cdn_url"}``."""
        return dict(self._call("GET", "/_sim/health"))

    def script(
        self,
        prompt_contains: str,
        *,
        outcome: Literal["completed", "failed"] = "completed",
        failure_reason: str = "simulated failure",
        queued_seconds: float | None = None,
        dreaming_seconds: float | None = None,
    ) -> None:
        """See :meth:`~.control.SimulatorControls.script`.

        :param prompt_contains: Text the prompt must contain.
        :param outcome: ``"completed"`` or ``"failed"``.
        :param failure_reason: The reason a failed one gives.
        :param queued_seconds: Its time ``queued``.
        :param dreaming_seconds: Its time ``dreaming``.
        """
        body: dict[str, Any] = {
            "prompt_contains": prompt_contains,
            "outcome": outcome,
            "failure_reason": failure_reason,
        }
        body |= {"queued_seconds": queued_seconds, "dreaming_seconds": dreaming_seconds}
        self._call("POST", "/_sim/script", body)

    def clear_scripts(self) -> None:
        """Forget all script rules."""
        self._call("DELETE", "/_sim/script")

    def set_state(self, generation_id: str, state: str, failure_reason: str | None = None) -> None:
        """See :meth:`~.control.SimulatorControls.set_state`.

        :param generation_id: The generation's id.
        :param state: The state to force.
        :param failure_reason: The reason a failed generation gives.
        """
        self._call("POST", "/_sim/state", {"id": generation_id, "state": state, "failure_reason": failure_reason})

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
        """See :meth:`~.control.SimulatorControls.inject_fault`.

        :param kind: The fault kind.
        :param endpoint: The endpoint it hits.
        :param times: How many requests it hits.
        :param retry_after: ``Retry-After`` of a 429.
        :param delay: Seconds of a ``slow`` fault.
        :param after: Apply it once the request took effect.
        """
        body: dict[str, Any] = {"kind": kind, "endpoint": endpoint, "times": times, "retry_after": retry_after}
        self._call("POST", "/_sim/faults", body | {"delay": delay, "after": after})

    def clear_faults(self) -> None:
        """Forget queued faults and switch random faults off."""
        self._call("DELETE", "/_sim/faults")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """See :meth:`~.control.SimulatorControls.configure`; returns the current values.

        :param changes: Options to change.
        """
        values = dict(self._call("POST", "/_sim/config", changes))
        values.pop("ok", None)
        return values

    def reset(self) -> None:
        """Forget generations, scripts, faults and the request log."""
        self._call("POST", "/_sim/reset", {})

    def requests(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """The request log (see :meth:`~.control.SimulatorControls.requests`).

        :param endpoint: Only entries of this endpoint.
        """
        query = "?" + urllib.parse.urlencode({"endpoint": endpoint}) if endpoint else ""
        return list(self._call("GET", "/_sim/requests" + query))

    def count(self, endpoint: str | None = None) -> int:
        """How many requests (to ``endpoint``, if given) were answered.

        :param endpoint: Only requests to this endpoint.
        """
        return len(self.requests(endpoint))

    def generation(self, generation_id: str) -> dict[str, Any]:
        """One generation as its family's fetch answers it (``KeyError`` if unknown).

        :param generation_id: Its id.
        """
        return dict(self._call("GET", "/_sim/generations/" + urllib.parse.quote(generation_id, safe="")))

    def generations(self) -> list[dict[str, Any]]:
        """All generations, oldest first."""
        return list(self._call("GET", "/_sim/generations"))
