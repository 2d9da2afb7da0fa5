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


def prompt_of(generation: dict[str, Any]) -> str:
    """The prompt a generation of ``sim.generations()`` was made with; ``""`` for a universal one (its answer
    carries no request)."""
    return str((generation.get("request") or {}).get("prompt", ""))


def create(s: Any, prompt: str = "a cat", **extra: Any) -> dict[str, Any]:
    """Create a ``luma-ai`` generation; assert the 201."""
    r = requests.post(s.base_url + GEN, json={"prompt": prompt, **extra}, headers=auth(s), timeout=5)
    assert r.status_code == 201, r.text
    return r.json()


#: Luma's own Dream Machine API, as the simulator serves it (the base path added to the host).
DM = "/dream-machine/v1"
DM_VIDEO = f"{DM}/generations/video"
DM_GENERATIONS = f"{DM}/generations"


def dm_create(s: Any, prompt: str = "a cat", model: str = "ray-2", **extra: Any) -> dict[str, Any]:
    """Create a generation on Luma's own API (``POST /generations/video``); assert the 201."""
    r = requests.post(
        s.base_url + DM_VIDEO, json={"prompt": prompt, "model": model, **extra}, headers=auth(s), timeout=5
    )
    assert r.status_code == 201, r.text
    return r.json()


def dm_get(s: Any, gen_id: str, key: str | None = None, **params: str) -> requests.Response:
    """``GET /generations/{id}`` on Luma's own API."""
    return requests.get(f"{s.base_url}{DM_GENERATIONS}/{gen_id}", params=params, headers=auth(s, key), timeout=5)


def control(s: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call a simulator's control API (``/_sim/...``), in-process or its CLI (anything with ``base_url`` and
    ``api_key``); return the decoded answer."""
    r = requests.request(method, s.base_url + path, json=body, headers=auth(s), timeout=30)
    r.raise_for_status()
    return r.json() if r.content else None
