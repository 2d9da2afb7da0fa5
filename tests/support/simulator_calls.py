"""Plain HTTP calls to a simulator, as a client of the API would make them."""

from __future__ import annotations

from typing import Any

import requests

from airflow_provider_luma.testing import LumaSimulator

GEN = "/v2/generate/video/luma-ai/generation"
GENS = "/v2/generate/video/luma-ai/generations"
UNI = "/v2/video/generations"


def auth(s: LumaSimulator, key: str | None = None) -> dict[str, str]:
    """The ``Authorization`` header with ``key`` (default: the simulator's own key)."""
    return {"Authorization": f"Bearer {key or s.api_key}"}


def create(s: LumaSimulator, prompt: str = "a cat", **extra: Any) -> dict[str, Any]:
    """Create a ``luma-ai`` generation; assert the 201."""
    r = requests.post(s.base_url + GEN, json={"prompt": prompt, **extra}, headers=auth(s), timeout=5)
    assert r.status_code == 201, r.text
    return r.json()


#: Luma's own Dream Machine API, as the simulator serves it (the base path added to the host).
DM = "/dream-machine/v1"
DM_VIDEO = f"{DM}/generations/video"
DM_GENERATIONS = f"{DM}/generations"


def dm_create(s: LumaSimulator, prompt: str = "a cat", model: str = "ray-2", **extra: Any) -> dict[str, Any]:
    """Create a generation on Luma's own API (``POST /generations/video``); assert the 201."""
    r = requests.post(
        s.base_url + DM_VIDEO, json={"prompt": prompt, "model": model, **extra}, headers=auth(s), timeout=5
    )
    assert r.status_code == 201, r.text
    return r.json()


def dm_get(s: LumaSimulator, gen_id: str, key: str | None = None, **params: str) -> requests.Response:
    """``GET /generations/{id}`` on Luma's own API."""
    return requests.get(f"{s.base_url}{DM_GENERATIONS}/{gen_id}", params=params, headers=auth(s, key), timeout=5)
