"""Plain HTTP calls to a simulator, as a client of the API would make them."""

from __future__ import annotations

from typing import Any

import requests

GEN = "/v2/generate/video/luma-ai/generation"
GENS = "/v2/generate/video/luma-ai/generations"
UNI = "/v2/video/generations"


def auth(s: Any, key: str | None = None) -> dict[str, str]:
    """The ``Authorization`` header with ``key`` (default: the simulator's own key)."""
    return {"Authorization": f"Bearer {key or s.api_key}"}


def create(s: Any, prompt: str = "a cat", **extra: Any) -> dict[str, Any]:
    """Create a ``luma-ai`` generation; assert the 201."""
    r = requests.post(s.base_url + GEN, json={"prompt": prompt, **extra}, headers=auth(s), timeout=5)
    assert r.status_code == 201, r.text
    return r.json()


def control(s: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call a simulator's control API (``/_sim/...``), in-process or its CLI (anything with ``base_url`` and
    ``api_key``); return the decoded answer."""
    r = requests.request(method, s.base_url + path, json=body, headers=auth(s), timeout=30)
    r.raise_for_status()
    return r.json() if r.content else None
