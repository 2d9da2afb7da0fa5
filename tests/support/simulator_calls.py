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
