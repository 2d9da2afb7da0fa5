"""Simulator: one bad request, to the API or to the control endpoints, never changes how it answers the next.

Real HTTP on 127.0.0.1. Each hostile request is sent between two rounds of ordinary calls; the second round
must see exactly what the first saw, and the request log and the generation list must stay readable (as strict
JSON: no ``NaN``). The hostile request itself is answered below 500: a 4xx, or a 2xx where the real service
would accept it too (a lone surrogate is valid JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_luma.testing import LumaSimulator
from tests.support.simulator_calls import GEN, GENS, UNI, auth

JSON_TYPE = {"Content-Type": "application/json"}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def strict_json(r: requests.Response) -> Any:
    """The answer's body as JSON, refusing ``NaN`` and ``Infinity`` (a JSON parser in another language would)."""
    return json.loads(r.content, parse_constant=_refuse_constant)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def fresh() -> Iterator[LumaSimulator]:
    """A simulator of its own for each case; generations stay queued (a slow machine sees the same states)."""
    with LumaSimulator(hold_seconds=0.5, queued_seconds=60, dreaming_seconds=60) as s:
        yield s


def ordinary_round(s: LumaSimulator) -> list[Any]:
    """What a well-behaved client sees from every family and the control API: statuses and answer fields."""
    headers = auth(s)
    seen: list[Any] = []
    r = requests.post(
        s.base_url + GEN, json={"prompt": "a calm lake", "aspect_ratio": "16:9"}, headers=headers, timeout=5
    )
    created = strict_json(r)
    seen.append(("create", r.status_code, sorted(created), created["state"]))
    r = requests.get(
        s.base_url + GEN, params={"generation_id": created["id"], "state": "queued"}, headers=headers, timeout=5
    )
    seen.append(("get", r.status_code, strict_json(r)["state"]))
    r = requests.get(
        s.base_url + GENS, params={"generation_ids[]": created["id"], "status": "queued"}, headers=headers, timeout=5
    )
    seen.append(("list", r.status_code, [g["id"] == created["id"] for g in strict_json(r)]))
    r = requests.post(
        s.base_url + UNI, json={"model": "luma/ray-2", "prompt": "a calm lake"}, headers=headers, timeout=5
    )
    universal = strict_json(r)
    seen.append(("video_create", r.status_code, sorted(universal)))
    r = requests.get(s.base_url + UNI, params={"generation_id": universal["id"]}, headers=headers, timeout=5)
    seen.append(("video_get", r.status_code, sorted(strict_json(r))))
    r = requests.get(s.base_url + "/_sim/requests", timeout=5)
    logged = strict_json(r)
    seen.append(("log", r.status_code, [e["endpoint"] for e in logged[-5:]]))
    r = requests.get(s.base_url + "/_sim/generations", timeout=5)
    seen.append(("generations", r.status_code, {g["id"] for g in strict_json(r)} >= {created["id"], universal["id"]}))
    seen.append(("python", len(s.requests()) == len(logged) + 0, s.count("create") >= 1, len(s.generations()) >= 2))
    return seen


def assert_next_round_unchanged(s: LumaSimulator, before: list[Any]) -> None:
    after = ordinary_round(s)
    assert after == before


# ---------------------------------------------------------------- the two reported breakages


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (GEN, nested(600)),
        (GEN, '{"prompt": "x", "keyframes": ' + nested(600) + "}"),
        (UNI, '{"model": "luma/ray-9", "prompt": "x", "style": ' + nested(600) + "}"),
        (UNI, '{"model": "luma/ray-9", "prompt": "x", "style": ' + nested(50_000) + "}"),
    ],
    ids=["luma-ai-list", "luma-ai-field", "universal-field", "universal-very-deep"],
)
def test_a_deeply_nested_body_leaves_the_request_log_readable(fresh: LumaSimulator, path: str, body: str) -> None:
    before = ordinary_round(fresh)
    r = requests.post(fresh.base_url + path, data=body, headers={**auth(fresh), **JSON_TYPE}, timeout=10)
    assert r.status_code == 400, r.text
    assert strict_json(r)["message"] == "Body validation error!"
    (entry,) = [e for e in fresh.requests() if e["status"] == 400]
    assert entry["json"] is None  # not kept as a structure ...
    assert isinstance(entry["body"], str)  # ... but as bounded text
    assert entry["body"].startswith(body[:100])
    assert len(entry["body"]) <= 4200
    assert_next_round_unchanged(fresh, before)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("hold_seconds", "5"),
        ("hold_seconds", -1),
        ("hold_seconds", float("nan")),
        ("queued_seconds", float("inf")),
        ("queued_seconds", "1"),
        ("dreaming_seconds", None),
        ("fault_rate", 2),
        ("fault_rate", "0.5"),
        ("strict_query", "no"),
        ("ignore_state_param", 1),
        ("status_code_as_string", "yes"),
        ("universal_id_suffix", "false"),
        ("multi_shape", ["list"]),
        ("fault_kinds", "500"),
        ("universal_status_words", {"queued": 5}),
        ("universal_status_words", {"queued": ""}),
    ],
)
def test_a_wrongly_typed_config_value_is_refused_with_its_name(fresh: LumaSimulator, option: str, value: Any) -> None:
    before = ordinary_round(fresh)
    old = getattr(fresh, option)
    raw = json.dumps({option: value}, allow_nan=True)
    r = requests.post(fresh.base_url + "/_sim/config", data=raw, headers=JSON_TYPE, timeout=5)
    assert r.status_code == 400, r.text
    assert option in r.text
    assert getattr(fresh, option) == old
    assert_next_round_unchanged(fresh, before)


def test_a_config_change_with_one_bad_value_changes_nothing(fresh: LumaSimulator) -> None:
    r = requests.post(fresh.base_url + "/_sim/config", json={"multi_shape": "data", "hold_seconds": "1"}, timeout=5)
    assert r.status_code == 400
    assert "hold_seconds" in r.text
    assert fresh.multi_shape == "list"


# ---------------------------------------------------------------- a sweep of hostile requests

HOSTILE: list[tuple[str, str, str, bytes | str | None, dict[str, str]]] = [
    # (name, method, path, body, headers beyond the key)
    ("very deep json", "POST", GEN, nested(5000), JSON_TYPE),
    ("NaN", "POST", GEN, '{"prompt": "x", "loop": NaN}', JSON_TYPE),
    ("NaN unchecked", "POST", UNI, '{"model": "luma/ray-9", "prompt": "x", "seed": NaN}', JSON_TYPE),
    ("Infinity", "POST", UNI, '{"model": "luma/ray-9", "prompt": "x", "n": 1e999999}', JSON_TYPE),
    ("huge integer", "POST", UNI, '{"model": "luma/ray-9", "prompt": "x", "n": 1' + "0" * 5000 + "}", JSON_TYPE),
    ("lone surrogate", "POST", UNI, '{"model": "luma/ray-9", "prompt": "\\ud800 cut"}', JSON_TYPE),
    ("invalid utf-8", "POST", GEN, b'{"prompt": "\xff\xfe"}', JSON_TYPE),
    ("not json", "POST", UNI, b"\x00\x01prompt", {}),
    ("null body", "POST", GEN, "null", JSON_TYPE),
    ("over 1 MiB", "POST", GEN, '{"prompt": "' + "x" * (1024**2 + 10) + '"}', JSON_TYPE),
    ("non-utf-8 key", "POST", GEN, '{"prompt": "x"}', {"Authorization": "Bearer \xff\xfe"}),
    ("long id", "GET", GEN + "?generation_id=" + "a" * 6000 + "&state=completed", None, {}),
    ("many ids", "GET", GENS + "?" + "&".join(f"generation_ids[]=g{i}" for i in range(500)), None, {}),
    ("bad escape", "GET", UNI + "?generation_id=%ff%fe%00", None, {}),
    ("failed target", "GET", GEN + "?generation_id=x&state=failed", None, {}),
    ("unknown route", "DELETE", "/v2/generate/video/luma-ai/generation/x", None, {}),
    # The control API: wrong types are refused, nothing is half-applied.
    ("script: number", "POST", "/_sim/script", '{"prompt_contains": 5}', JSON_TYPE),
    ("script: text seconds", "POST", "/_sim/script", '{"prompt_contains": "calm", "queued_seconds": "1"}', JSON_TYPE),
    ("script: outcome", "POST", "/_sim/script", '{"prompt_contains": "calm", "outcome": ["failed"]}', JSON_TYPE),
    ("fault: text delay", "POST", "/_sim/faults", '{"kind": "slow", "delay": "x"}', JSON_TYPE),
    ("fault: text times", "POST", "/_sim/faults", '{"kind": "503", "times": "2"}', JSON_TYPE),
    ("fault: object retry", "POST", "/_sim/faults", '{"kind": "429", "retry_after": {"s": 1}}', JSON_TYPE),
    ("fault: text after", "POST", "/_sim/faults", '{"kind": "503", "endpoint": "video", "after": "no"}', JSON_TYPE),
    (
        "state: object reason",
        "POST",
        "/_sim/state",
        '{"id": "GEN_ID", "state": "failed", "failure_reason": {"a": 1}}',
        JSON_TYPE,
    ),
    ("config: NaN", "POST", "/_sim/config", '{"hold_seconds": NaN}', JSON_TYPE),
    ("config: list", "POST", "/_sim/config", "[1]", JSON_TYPE),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_request_is_answered_and_changes_nothing(
    fresh: LumaSimulator, method: str, path: str, body: bytes | str | None, headers: dict[str, str]
) -> None:
    target = requests.post(fresh.base_url + GEN, json={"prompt": "a target"}, headers=auth(fresh), timeout=5).json()
    if isinstance(body, str):
        body = body.replace("GEN_ID", target["id"])
    before = ordinary_round(fresh)
    r = requests.request(method, fresh.base_url + path, data=body, headers={**auth(fresh), **headers}, timeout=10)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    assert_next_round_unchanged(fresh, before)


JSON_LEAVES = st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from([GEN, UNI]),
    field=st.sampled_from(["prompt", "keyframes", "aspect_ratio", "loop", "duration", "extra"]),
    value=JSON_VALUES,
)
@example(path=UNI, field="extra", value=float("nan"))
@example(path=UNI, field="prompt", value="\ud83d")  # half a surrogate pair: JSON can carry it escaped
@example(path=UNI, field="extra", value=2**64)
@example(path=GEN, field="keyframes", value={"frame0": {"type": "generation", "id": [[[[]]]]}})
def test_any_json_body_to_a_create_leaves_the_next_round_unchanged(
    fresh: LumaSimulator, path: str, field: str, value: Any
) -> None:
    fresh.reset()  # the same simulator for every example: only creates are sent, so a reset isolates them
    before = ordinary_round(fresh)
    body = {"prompt": "x", **({"model": "luma/ray-9"} if path == UNI else {}), field: value}
    raw = json.dumps(body, allow_nan=True)  # NaN and Infinity on the wire, as a careless client sends them
    r = requests.post(fresh.base_url + path, data=raw, headers={**auth(fresh), **JSON_TYPE}, timeout=10)
    assert r.status_code < 500, r.text[:300]
    strict_json(r)
    assert_next_round_unchanged(fresh, before)
