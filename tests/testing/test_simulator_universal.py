"""Simulator: the universal video endpoint, the hold parameter's name, strict queries, gone routes.

Real HTTP on 127.0.0.1; assertions rest on answers and the request log, with loose time bounds only.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_luma.testing import SAMPLE_VIDEO_PATH, UNIVERSAL_PATH, LumaSimulator
from tests.support.simulator_calls import GEN, GENS, UNI, auth, create

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def vcreate(s: LumaSimulator, model: str = "luma/ray-2", prompt: str = "a cat", **extra: Any) -> requests.Response:
    return requests.post(s.base_url + UNI, json={"model": model, "prompt": prompt, **extra}, headers=auth(s), timeout=5)


def vcreated(s: LumaSimulator, model: str = "luma/ray-2", prompt: str = "a cat", **extra: Any) -> str:
    r = vcreate(s, model, prompt, **extra)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def vget(s: LumaSimulator, gen_id: str, **params: str) -> requests.Response:
    return requests.get(s.base_url + UNI, params={"generation_id": gen_id, **params}, headers=auth(s), timeout=10)


def get(s: LumaSimulator, gen_id: str, timeout: float = 10, **params: str) -> requests.Response:
    return requests.get(s.base_url + GEN, params={"generation_id": gen_id, **params}, headers=auth(s), timeout=timeout)


def get_many(s: LumaSimulator, ids: list[str], **params: str) -> requests.Response:
    return requests.get(
        s.base_url + GENS, params={"generation_ids": ",".join(ids), **params}, headers=auth(s), timeout=10
    )


def assert_envelope(r: requests.Response, status: int, message: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["statusCode"] == status
    assert {"message", "path", "requestId", "timestamp"} <= set(body)
    if message is not None:
        assert body["message"] == message
    return body


# ---------------------------------------------------------------- universal: create and fetch


VALID_BODIES: list[tuple[str, dict[str, Any]]] = [
    (
        "luma/ray-2",
        {
            "aspect_ratio": "21:9",
            "resolution": "4k",
            "duration": 9,
            "loop": True,
            "keyframes": {"frame0": {"type": "image", "url": "https://example.com/a.jpg"}, "frame1": None},
        },
    ),
    ("luma/ray-2", {"duration": "5", "aspect_ratio": "9:21"}),
    ("luma/ray-flash-2", {"resolution": "540p", "duration": "9", "loop": False}),
    (
        "luma/ray-3.2",
        {
            "type": "video",
            "resolution": "360p",
            "duration": 10,
            "aspect_ratio": "21:9",
            "loop": True,
            "image_url": "https://example.com/a.jpg",
            "last_image_url": "https://example.com/b.jpg",
        },
    ),
    ("luma/ray-3.2", {"type": "video_edit", "video_url": "https://example.com/in.mp4"}),
    ("luma/ray-3.2", {"type": "video_reframe", "video_url": "https://example.com/in.mp4", "aspect_ratio": "9:16"}),
    ("luma/ray-3.2", {"hdr": True, "exr_export": True, "duration": 5, "resolution": "1080p"}),
    ("luma/ray-3.2", {"hdr": True}),  # defaults: 5 s at 720p
    ("luma/ray-1-6", {"aspect_ratio": "4:3", "loop": True}),
    ("luma/ray-9", {"whatever": [1, 2], "future_knob": "on"}),  # newer than the simulator
]


@pytest.mark.parametrize(("model", "extra"), VALID_BODIES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(VALID_BODIES)])
def test_universal_create_and_fetch(sim: LumaSimulator, model: str, extra: dict[str, Any]) -> None:
    sim.script("cat", queued_seconds=60)
    r = vcreate(sim, model, **extra)
    assert r.status_code == 200, r.text
    created = r.json()
    assert set(created) == {"id", "status"}
    assert created["status"] == "queued"
    raw, sep, suffix = created["id"].partition(":")
    assert (sep, suffix) == (":", model)
    assert str(uuid.UUID(raw)) == raw
    assert sim.requests("video_create")[0]["json"] == {"model": model, "prompt": "a cat", **extra}
    r = vget(sim, created["id"])
    assert r.status_code == 200
    assert r.json() == {
        "id": created["id"],
        "status": "queued",
        "video": None,
        "error": None,
        "meta": None,
        "model": model,
    }


def test_universal_completed_video_and_usage(sim: LumaSimulator) -> None:
    sim.script("now", queued_seconds=0, dreaming_seconds=0)
    five = vcreated(sim, prompt="now")
    nine = vcreated(sim, prompt="now", duration=9)
    body = vget(sim, five).json()
    assert body["status"] == "completed"
    assert body["error"] is None
    assert body["meta"] == {"usage": {"credits_used": 100000, "usd_spent": 0.5}}
    assert vget(sim, nine).json()["meta"] == {"usage": {"credits_used": 180000, "usd_spent": 0.9}}
    url = body["video"]["url"]
    # Served by the uuid part: the id's ':' and '/' stay out of the path.
    assert url == f"{sim.cdn_url}/videos/{five.partition(':')[0]}.mp4"
    r = requests.get(url, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "video/mp4"
    assert r.content == SAMPLE_VIDEO_PATH.read_bytes()
    assert [e["status"] for e in sim.requests("video")] == [200]


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "x"}, "model"),
    ({"model": 7, "prompt": "x"}, "model"),
    ({"model": "openai/sora-2", "prompt": "x"}, "model"),
    ({"model": "ray-2", "prompt": "x"}, "model"),  # the luma-ai spelling is not a universal model
    ({"model": "luma/ray-2"}, "prompt"),
    ({"model": "luma/ray-2", "prompt": "x" * 2049}, "prompt"),
    ({"model": "luma/ray-9", "prompt": 5}, "prompt"),  # unknown luma/ model: prompt still checked
    ({"model": "luma/ray-2", "prompt": "x", "hdr": True}, "hdr"),
    ({"model": "luma/ray-2", "prompt": "x", "aspect_ratio": "2:1"}, "aspect_ratio"),
    ({"model": "luma/ray-2", "prompt": "x", "resolution": "360p"}, "resolution"),
    ({"model": "luma/ray-2", "prompt": "x", "duration": 10}, "duration"),
    ({"model": "luma/ray-2", "prompt": "x", "duration": "5s"}, "duration"),
    ({"model": "luma/ray-2", "prompt": "x", "duration": True}, "duration"),
    ({"model": "luma/ray-2", "prompt": "x", "loop": "yes"}, "loop"),
    (
        {"model": "luma/ray-2", "prompt": "x", "keyframes": {"frame0": {"type": "video", "url": "u"}}},
        "keyframes.frame0.type",
    ),
    (
        {"model": "luma/ray-2", "prompt": "x", "keyframes": {"frame0": {"type": "generation", "id": "nope"}}},
        "keyframes.frame0.id",
    ),
    ({"model": "luma/ray-flash-2", "prompt": "x", "type": "video"}, "type"),
    ({"model": "luma/ray-1-6", "prompt": "x", "resolution": "720p"}, "resolution"),
    ({"model": "luma/ray-1-6", "prompt": "x", "duration": 5}, "duration"),
    ({"model": "luma/ray-3.2", "prompt": "x", "aspect_ratio": "9:21"}, "aspect_ratio"),
    ({"model": "luma/ray-3.2", "prompt": "x", "resolution": "4k"}, "resolution"),
    ({"model": "luma/ray-3.2", "prompt": "x", "duration": 9}, "duration"),
    ({"model": "luma/ray-3.2", "prompt": "x", "type": "image"}, "type"),
    ({"model": "luma/ray-3.2", "prompt": "x", "keyframes": None}, "keyframes"),
    ({"model": "luma/ray-3.2", "prompt": "x", "video_url": 1}, "video_url"),
    ({"model": "luma/ray-3.2", "prompt": "x", "hdr": "yes"}, "hdr"),
    ({"model": "luma/ray-3.2", "prompt": "x", "type": "video_edit"}, "video_url"),
    ({"model": "luma/ray-3.2", "prompt": "x", "type": "video_reframe", "image_url": "u"}, "video_url"),
    ({"model": "luma/ray-3.2", "prompt": "x", "hdr": True, "duration": 10}, "hdr"),
    ({"model": "luma/ray-3.2", "prompt": "x", "hdr": True, "resolution": "540p"}, "hdr"),
    ({"model": "luma/ray-3.2", "prompt": "x", "hdr": True, "resolution": "360p", "duration": "5"}, "hdr"),
    ({"model": "luma/ray-3.2", "prompt": "x", "exr_export": True}, "exr_export"),
    ({"model": "luma/ray-3.2", "prompt": "x", "exr_export": True, "hdr": False}, "exr_export"),
    (["luma/ray-2"], ""),
]


@pytest.mark.parametrize(
    ("body", "path"), BAD_BODIES, ids=[f"{i}-{p or 'body'}" for i, (_, p) in enumerate(BAD_BODIES)]
)
def test_universal_validation(sim: LumaSimulator, body: Any, path: str) -> None:
    r = requests.post(sim.base_url + UNI, json=body, headers=auth(sim), timeout=5)
    err = assert_envelope(r, 400, "Body validation error!")
    assert path in [e["path"] for e in err["errors"]], err
    assert sim.generations() == []


def test_universal_invalid_json_and_generation_keyframe(sim: LumaSimulator) -> None:
    r = requests.post(sim.base_url + UNI, data=b"{nope", headers=auth(sim), timeout=5)
    assert_envelope(r, 400, "Body validation error!")
    first = vcreated(sim)
    kf = {"frame0": {"type": "generation", "id": first}}
    assert vcreate(sim, keyframes=kf).status_code == 400  # not completed yet
    sim.set_state(first, "completed")
    assert vcreate(sim, keyframes=kf).status_code == 200
    bare = {"frame1": {"type": "generation", "id": first.partition(":")[0]}}
    assert vcreate(sim, keyframes=bare).status_code == 200


def test_universal_fetch_errors(sim: LumaSimulator) -> None:
    r = vget(sim, f"{uuid.uuid4()}:luma/ray-2")
    body = assert_envelope(r, 404, "Generation not found")
    assert body["path"] == UNI
    r = requests.get(sim.base_url + UNI, headers=auth(sim), timeout=5)
    body = assert_envelope(r, 400, "Query validation error!")
    assert [e["path"] for e in body["errors"]] == ["generation_id"]
    assert [e["released_by"] for e in sim.requests("video_get")] == [None, None]


def test_universal_fetch_never_holds(sim: LumaSimulator) -> None:
    sim.hold_seconds = 30
    sim.script("stuck", queued_seconds=60)
    gen_id = vcreated(sim, prompt="stuck")
    for params in ({"state": "completed"}, {"status": "completed"}):
        r = vget(sim, gen_id, **params)
        assert r.json()["status"] == "queued"
    entries = sim.requests("video_get")
    assert [(e["held"], e["released_by"]) for e in entries] == [(0.0, "immediate"), (0.0, "immediate")]
    assert all(e["elapsed"] < 5 for e in entries)  # loose: a 30 s hold would have blown it


def test_universal_id_options(sim: LumaSimulator) -> None:
    sim.universal_id_field = "generation_id"
    r = vcreate(sim, "luma/ray-flash-2")
    assert set(r.json()) == {"generation_id", "status"}
    assert r.json()["generation_id"].endswith(":luma/ray-flash-2")
    sim.universal_id_suffix = False
    bare = vcreate(sim).json()["generation_id"]
    assert str(uuid.UUID(bare)) == bare
    sim.set_state(bare, "completed")
    body = vget(sim, bare).json()
    assert body["id"] == bare
    assert body["model"] == "luma/ray-2"
    assert requests.get(body["video"]["url"], timeout=5).ok
    # Still a universal generation: the luma-ai fetch does not know it.
    assert_envelope(get(sim, bare), 404)
    ctl = requests.post(
        sim.base_url + "/_sim/config", json={"universal_id_field": "id", "universal_id_suffix": True}, timeout=5
    )
    assert ctl.ok
    assert vcreate(sim, "luma/ray-3.2").json()["id"].endswith(":luma/ray-3.2")


def test_universal_status_words(sim: LumaSimulator) -> None:
    sim.script("stuck", queued_seconds=60)
    gen_id = vcreated(sim, prompt="stuck")
    seen = [vget(sim, gen_id).json()["status"]]
    for state in ("dreaming", "completed"):
        sim.set_state(gen_id, state)
        seen.append(vget(sim, gen_id).json()["status"])
    assert seen == ["queued", "generating", "completed"]
    sim.set_state(gen_id, "failed", "content policy")
    body = vget(sim, gen_id).json()
    assert body["status"] == "error"
    assert body["error"] == {"name": "GenerationError", "message": "content policy"}
    assert body["video"] is None
    assert body["meta"] is None
    # Overridden words, through the control endpoint as another process would.
    words = {"queued": "waiting", "dreaming": "active"}
    assert requests.post(sim.base_url + "/_sim/config", json={"universal_status_words": words}, timeout=5).ok
    created = vcreate(sim, prompt="stuck").json()
    assert created["status"] == "waiting"
    assert vget(sim, created["id"]).json()["status"] == "waiting"
    sim.set_state(created["id"], "dreaming")
    assert vget(sim, created["id"]).json()["status"] == "active"
    sim.universal_status_words = {"dreaming": "processing"}
    assert vget(sim, created["id"]).json()["status"] == "processing"
    assert vget(sim, gen_id).json()["status"] == "error"


def test_universal_uses_scripts_and_directives(sim: LumaSimulator) -> None:
    sim.script("doomed", outcome="failed", failure_reason="nsfw", queued_seconds=0, dreaming_seconds=0)
    doomed = vcreated(sim, prompt="doomed")
    assert vget(sim, doomed).json()["error"]["message"] == "nsfw"
    sim.queued_seconds = sim.dreaming_seconds = 0
    failed = vcreated(sim, "luma/ray-3.2", prompt="x [sim:fail]")
    assert vget(sim, failed).json()["error"]["message"] == "simulated failure"
    sim.queued_seconds = 0.5
    slow = vcreated(sim, prompt="y [sim:slow]")
    g = sim.store.get(slow)
    assert g is not None
    assert g.dreaming_at - g.created_at == pytest.approx(5.0)


def test_families_do_not_see_each_other(sim: LumaSimulator) -> None:
    sim.script("a cat", queued_seconds=60)  # still queued at the end, however slow the machine
    old = create(sim)["id"]
    new = vcreated(sim)
    sim.universal_id_suffix = False
    bare = vcreated(sim)
    assert_envelope(vget(sim, old), 404, "Generation not found")
    for gen_id in (new, bare):
        body = assert_envelope(get(sim, gen_id), 404)
        assert "Generation not found" in body["message"]
        assert_envelope(get_many(sim, [old, gen_id]), 404)
    assert get(sim, old).ok
    assert vget(sim, new).ok
    # Both live in one store: set_state and generations() work across families.
    sim.set_state(new, "dreaming")
    rendered = {g["id"]: g for g in sim.generations()}
    assert rendered[new]["status"] == "generating"
    assert rendered[old]["state"] == "queued"
    assert sim.generation(new)["model"] == "luma/ray-2"


def test_universal_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    s1 = LumaSimulator(state_file=state, queued_seconds=0, dreaming_seconds=0)
    s1.start()
    try:
        gen_id = vcreated(s1)
    finally:
        s1.stop()
    saved = json.loads(state.read_text())["generations"]
    assert [(g["id"], g["family"]) for g in saved] == [(gen_id, "universal")]
    # A state file written before the universal endpoint existed has no family: luma-ai.
    for g in saved:
        del g["family"]
    old_file = tmp_path / "old.json"
    old_file.write_text(json.dumps({"version": 1, "generations": saved}))
    with LumaSimulator(state_file=state) as s2:
        assert vget(s2, gen_id).json()["status"] == "completed"
    with LumaSimulator(state_file=old_file) as s3:
        assert get(s3, gen_id).json()["state"] == "completed"


def test_universal_path_constant() -> None:
    assert UNIVERSAL_PATH == UNI


# ---------------------------------------------------------------- hold parameter names


def _stuck(s: LumaSimulator, n: int = 1) -> list[str]:
    s.script("stuck", queued_seconds=60)
    return [create(s, "stuck")["id"] for _ in range(n)]


def test_default_hold_names_single_state_multi_status(sim: LumaSimulator) -> None:
    sim.hold_seconds = 0.3
    (gen_id,) = _stuck(sim)
    assert get(sim, gen_id, state="completed").json()["state"] == "queued"
    assert get(sim, gen_id, status="completed").json()["state"] == "queued"  # ignored: lenient
    assert get_many(sim, [gen_id], status="completed").ok
    assert get_many(sim, [gen_id], state="completed").ok  # ignored: lenient
    got = [(e["query"], e["released_by"]) for e in sim.requests("get")]
    assert got == [
        ({"generation_id": gen_id, "state": "completed"}, "timeout"),
        ({"generation_id": gen_id, "status": "completed"}, "immediate"),
    ]
    assert [e["released_by"] for e in sim.requests("list")] == ["timeout", "immediate"]
    held = [e["held"] for e in sim.requests() if e["released_by"] == "timeout"]
    assert len(held) == 2
    assert all(0.25 <= h < 5 for h in held)
    assert all(e["held"] == 0.0 for e in sim.requests() if e["released_by"] == "immediate")


def test_swapped_hold_names(sim: LumaSimulator) -> None:
    sim.hold_seconds = 0.3
    r = requests.post(
        sim.base_url + "/_sim/config", json={"single_hold_param": "status", "multi_hold_param": "state"}, timeout=5
    )
    assert r.ok
    (gen_id,) = _stuck(sim)
    get(sim, gen_id, status="completed")
    get(sim, gen_id, state="completed")
    get_many(sim, [gen_id], state="completed")
    get_many(sim, [gen_id], status="completed")
    assert [e["released_by"] for e in sim.requests("get")] == ["timeout", "immediate"]
    assert [e["released_by"] for e in sim.requests("list")] == ["timeout", "immediate"]


def test_hold_value_checked_on_the_honoured_name_only(sim: LumaSimulator) -> None:
    (gen_id,) = _stuck(sim)
    assert_envelope(get(sim, gen_id, state="failed"), 400)
    assert_envelope(get(sim, gen_id, state="bogus"), 400)
    assert get(sim, gen_id, status="failed").ok  # not read at all
    assert_envelope(get_many(sim, [gen_id], status="failed"), 400)
    assert get_many(sim, [gen_id], state="streaming").ok
    assert [e["released_by"] for e in sim.requests("get")] == [None, None, "immediate"]


def test_ignore_state_param_on_any_name(sim: LumaSimulator) -> None:
    sim.ignore_state_param = True
    sim.strict_query = True
    (gen_id,) = _stuck(sim)
    assert get(sim, gen_id, state="completed").json()["state"] == "queued"
    assert get_many(sim, [gen_id], status="completed").ok
    assert [(e["held"], e["released_by"]) for e in sim.requests() if e["endpoint"] != "create"] == [
        (0.0, "immediate"),
        (0.0, "immediate"),
    ]


# ---------------------------------------------------------------- strict query


def test_strict_query_rejects_unknown_names(sim: LumaSimulator) -> None:
    assert requests.post(sim.base_url + "/_sim/config", json={"strict_query": True}, timeout=5).ok
    (gen_id,) = _stuck(sim)
    uni = vcreated(sim)
    cases = [
        (get(sim, gen_id, status="completed"), ["status"]),
        (get_many(sim, [gen_id], state="completed"), ["state"]),
        (vget(sim, uni, state="completed"), ["state"]),
        (vget(sim, uni, status="completed", foo="1"), ["status", "foo"]),
        (get(sim, gen_id, state="queued", extra="1"), ["extra"]),
    ]
    for r, names in cases:
        body = assert_envelope(r, 400, "Query validation error!")
        assert body["errors"] == [{"path": n, "message": f"property {n} should not exist"} for n in names]
    # Known names pass.
    assert get(sim, gen_id, state="queued").ok
    assert get_many(sim, [gen_id], status="queued").ok
    r = requests.get(sim.base_url + GENS, params={"generation_ids[]": [gen_id]}, headers=auth(sim), timeout=5)
    assert r.ok
    assert vget(sim, uni).ok
    # Auth comes before query validation.
    r = requests.get(sim.base_url + GEN, params={"generation_id": gen_id, "status": "x"}, timeout=5)
    assert r.status_code == 401
    assert [e["status"] for e in sim.requests("get")] == [400, 400, 200, 401]


# ---------------------------------------------------------------- gone routes and unknown routes


def nest_404(method: str, path: str) -> dict[str, Any]:
    return {"message": f"Cannot {method} {path}", "error": "Not Found", "statusCode": 404}


def test_luma_ai_routes_gone(sim: LumaSimulator) -> None:
    gen_id = create(sim)["id"]
    assert requests.post(sim.base_url + "/_sim/config", json={"luma_ai_routes_gone": True}, timeout=5).ok
    sim.inject_fault("500", endpoint="any")
    r = requests.post(sim.base_url + GEN, json={"prompt": "x"}, headers=auth(sim), timeout=5)
    assert r.status_code == 404
    assert r.json() == nest_404("POST", GEN)
    r = get(sim, gen_id, state="completed")
    assert r.json() == nest_404("GET", GEN)
    assert get_many(sim, [gen_id]).json() == nest_404("GET", GENS)
    # No auth needed for a route that does not exist; neither a stray path below the prefix.
    r = requests.post(sim.base_url + GEN, json={"prompt": "x"}, timeout=5)
    assert r.json() == nest_404("POST", GEN)
    r = requests.delete(sim.base_url + "/v2/generate/video/luma-ai/whatever", timeout=5)
    assert r.json() == nest_404("DELETE", "/v2/generate/video/luma-ai/whatever")
    assert [e["endpoint"] for e in sim.requests()] == ["create", "create", "get", "list", "create", "other"]
    assert all(e["status"] == 404 and e["fault"] is None for e in sim.requests()[1:])
    assert len(sim.generations()) == 1
    # The universal family still answers; the queued fault was kept for it.
    r = vcreate(sim)
    assert r.status_code == 500
    assert vcreate(sim).status_code == 200
    sim.luma_ai_routes_gone = False
    assert get(sim, gen_id).ok


def test_unknown_route_has_nest_shape_unlike_generation_not_found(sim: LumaSimulator) -> None:
    r = requests.get(sim.base_url + "/v2/nope?x=1", headers=auth(sim), timeout=5)
    assert r.status_code == 404
    assert r.json() == nest_404("GET", "/v2/nope")
    r = requests.delete(sim.base_url + GEN, headers=auth(sim), timeout=5)
    assert r.json() == nest_404("DELETE", GEN)
    r = requests.put(sim.base_url + UNI, timeout=5)
    assert r.json() == nest_404("PUT", UNI)
    missing = get(sim, str(uuid.uuid4()))
    body = assert_envelope(missing, 404)
    assert "error" not in body
    assert [e["endpoint"] for e in sim.requests()] == ["other", "other", "other", "get"]


# ---------------------------------------------------------------- held / released_by


def test_released_by_state_change_while_held(sim: LumaSimulator) -> None:
    sim.hold_seconds = 10
    a, b = _stuck(sim, 2)
    threading.Timer(0.3, sim.set_state, (a, "completed")).start()
    assert get(sim, a, state="completed").json()["state"] == "completed"
    timer = threading.Timer(0.3, sim.set_state, (b, "failed", "boom"))
    timer.start()
    states = [g["state"] for g in get_many(sim, [a, b], status="completed").json()]
    assert states == ["completed", "failed"]
    for entry in sim.requests("get") + sim.requests("list"):
        assert entry["released_by"] == "state"
        assert 0.1 < entry["held"] < 5  # loose: woken by the change, not by the 10 s hold
        assert entry["held"] <= entry["elapsed"]


def test_released_by_timeline_and_immediate(sim: LumaSimulator) -> None:
    sim.hold_seconds = 10
    sim.script("soon", queued_seconds=0.6)
    gen_id = create(sim, "soon")["id"]
    get(sim, gen_id, state="dreaming")
    get(sim, gen_id, state="queued")
    get(sim, gen_id)
    assert [e["released_by"] for e in sim.requests("get")] == ["state", "immediate", "immediate"]
    assert [e["held"] for e in sim.requests("get")][1:] == [0.0, 0.0]
    assert_envelope(get(sim, str(uuid.uuid4()), state="completed"), 404)
    assert sim.requests("get")[-1]["released_by"] is None
    vcreated(sim)
    non_fetch = [e for e in sim.requests() if e["endpoint"] in ("create", "video_create")]
    assert [(e["held"], e["released_by"]) for e in non_fetch] == [(0.0, None), (0.0, None)]


def test_connection_json_extras(sim: LumaSimulator) -> None:
    plain = json.loads(sim.connection_json())
    assert plain == {"conn_type": "luma", "host": sim.base_url, "password": sim.api_key}
    conn = json.loads(sim.connection_json(api_family="universal", poll_interval=2))
    assert conn == {**plain, "extra": {"api_family": "universal", "poll_interval": 2}}


def test_config_accepts_and_checks_new_options(sim: LumaSimulator) -> None:
    settings = {
        "single_hold_param": "status",
        "multi_hold_param": "state",
        "strict_query": True,
        "luma_ai_routes_gone": True,
        "universal_id_field": "generation_id",
        "universal_id_suffix": False,
        "universal_status_words": {"queued": "waiting"},
    }
    r = requests.post(sim.base_url + "/_sim/config", json=settings, timeout=5)
    assert r.ok
    assert {k: r.json()[k] for k in settings} == settings
    for bad in (
        {"single_hold_param": "wait"},
        {"multi_hold_param": None},
        {"universal_id_field": "uuid"},
        {"universal_status_words": {"running": "x"}},
        {"universal_status_words": ["x"]},
        {"fault_kinds": ["nope"]},
        {"no_such_option": 1},
    ):
        assert requests.post(sim.base_url + "/_sim/config", json=bad, timeout=5).status_code == 400, bad
    with pytest.raises(ValueError, match="single_hold_param"):
        LumaSimulator(single_hold_param="wait")
    with pytest.raises(ValueError, match="universal_id_field"):
        LumaSimulator(universal_id_field="uuid")
