"""Simulator: the third family, Luma's own Dream Machine API under ``/dream-machine/v1``.

Real HTTP on 127.0.0.1; assertions rest on answers and the request log, with loose time bounds only.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_luma.testing import (
    DREAM_MACHINE_MODELS,
    DREAM_MACHINE_PREFIX,
    ENDPOINTS,
    LOG_ENDPOINTS,
    LumaSimulator,
    SimulatorClient,
    clip_path,
)
from tests.support.simulator_calls import DM_GENERATIONS, DM_VIDEO, GEN, UNI, auth, create, dm_create, dm_get


def dm_post(s: LumaSimulator, body: Any, path: str = DM_VIDEO, key: str | None = None) -> requests.Response:
    return requests.post(s.base_url + path, json=body, headers=auth(s, key), timeout=5)


def dm_list(s: LumaSimulator, **params: Any) -> requests.Response:
    return requests.get(s.base_url + DM_GENERATIONS, params=params, headers=auth(s), timeout=5)


def dm_delete(s: LumaSimulator, gen_id: str, key: str | None = None) -> requests.Response:
    return requests.delete(f"{s.base_url}{DM_GENERATIONS}/{gen_id}", headers=auth(s, key), timeout=5)


def detail(r: requests.Response, status: int) -> str:
    """The ``detail`` of a Luma error answer, after checking that it is exactly that shape."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], str)
    return str(body["detail"])


def test_the_family_is_registered_with_its_endpoints() -> None:
    assert DREAM_MACHINE_PREFIX == "/dream-machine/v1"
    assert DREAM_MACHINE_MODELS == ("ray-2", "ray-flash-2", "ray-1-6")
    assert {"dm_create", "dm_get", "dm_list", "dm_delete"} <= set(ENDPOINTS) & set(LOG_ENDPOINTS)


# ---------------------------------------------------------------- create


def test_create_answers_201_with_luma_generation(sim: LumaSimulator) -> None:
    sim.script("cat", queued_seconds=60)
    body = {
        "prompt": "a cat",
        "model": "ray-flash-2",
        "aspect_ratio": "9:16",
        "resolution": "720p",
        "duration": "9s",
        "loop": True,
        "callback_url": "https://example.com/hook",
        "generation_type": "video",
        "concepts": [{"key": "dolly_zoom"}],
        "keyframes": {"frame0": {"type": "image", "url": "https://example.com/a.jpg"}},
    }
    r = dm_post(sim, body)
    assert r.status_code == 201, r.text
    gen = r.json()
    assert set(gen) == {"id", "generation_type", "state", "failure_reason", "created_at", "assets", "model", "request"}
    assert str(uuid.UUID(gen["id"])) == gen["id"]  # a bare uuid: no model suffix
    assert (gen["state"], gen["model"], gen["generation_type"], gen["failure_reason"]) == (
        "queued",
        "ray-flash-2",
        "video",
        None,
    )
    assert gen["assets"] == {"video": None, "image": None, "progress_video": None}
    assert gen["request"] == body
    assert gen["created_at"].endswith("Z")
    (entry,) = sim.requests("dm_create")
    assert (entry["method"], entry["path"], entry["status"], entry["json"]) == ("POST", DM_VIDEO, 201, body)


def test_the_older_create_path_defaults_the_model(sim: LumaSimulator) -> None:
    r = dm_post(sim, {"prompt": "a dog"}, path=DM_GENERATIONS)
    assert r.status_code == 201, r.text
    assert r.json()["model"] == "ray-2"
    assert [e["path"] for e in sim.requests("dm_create")] == [DM_GENERATIONS]
    # The current path needs the model, as the lumaai SDK's create does.
    assert "model: Required" in detail(dm_post(sim, {"prompt": "a dog"}), 400)
    assert len(sim.generations()) == 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"prompt": "x", "model": "luma/ray-2"}, "model"),
        ({"prompt": "x", "model": "ray-3.2"}, "model"),
        ({"prompt": "x", "model": "ray-2", "duration": 5}, "duration"),
        ({"prompt": "x", "model": "ray-2", "duration": "10s"}, "duration"),
        ({"prompt": "x", "model": "ray-2", "resolution": "360p"}, "resolution"),
        ({"prompt": "x", "model": "ray-2", "aspect_ratio": "2:1"}, "aspect_ratio"),
        ({"prompt": "x", "model": "ray-2", "loop": "yes"}, "loop"),
        ({"prompt": "x", "model": "ray-2", "hdr": True}, "hdr"),
        ({"prompt": "x", "model": "ray-2", "callback_url": 7}, "callback_url"),
        ({"prompt": "x", "model": "ray-2", "concepts": ["zoom"]}, "concepts"),
        ({"prompt": "x", "model": "ray-2", "generation_type": "image"}, "generation_type"),
        ({"prompt": "x", "model": "ray-2", "keyframes": {"frame0": {"type": "video"}}}, "keyframes.frame0.type"),
        ({"prompt": "x", "model": "ray-2", "keyframes": {"frame0": {"type": "generation", "id": "no"}}}, "frame0.id"),
        ({"model": "ray-2"}, "prompt"),
        ({"prompt": "x" * 2049, "model": "ray-2"}, "prompt"),
        (["x"], "body"),
    ],
)
def test_create_validation_answers_detail_naming_the_field(sim: LumaSimulator, body: Any, named: str) -> None:
    message = detail(dm_post(sim, body), 400)
    assert message.startswith("Body validation error!")
    assert f"{named}:" in message
    assert sim.generations() == []


def test_a_body_that_is_not_json_is_a_detail_400(sim: LumaSimulator) -> None:
    r = requests.post(sim.base_url + DM_VIDEO, data=b"{nope", headers=auth(sim), timeout=5)
    assert "Invalid JSON" in detail(r, 400)


def test_a_generation_keyframe_must_be_completed(sim: LumaSimulator) -> None:
    first = dm_create(sim)
    frames = {"frame0": {"type": "generation", "id": first["id"]}}
    assert "not completed" in detail(dm_post(sim, {"prompt": "more", "model": "ray-2", "keyframes": frames}), 400)
    sim.set_state(first["id"], "completed")
    assert dm_post(sim, {"prompt": "more", "model": "ray-2", "keyframes": frames}).status_code == 201


# ---------------------------------------------------------------- fetch: no long poll


def test_fetch_follows_the_timeline_and_serves_the_video(sim: LumaSimulator) -> None:
    gen = dm_create(sim, aspect_ratio="1:1")
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = dm_get(sim, gen["id"]).json()
        if not seen or seen[-1] != answer["state"]:
            seen.append(answer["state"])
        if answer["state"] == "completed":
            break
        time.sleep(0.05)
    assert seen[0] == "queued"
    assert seen[-1] == "completed"
    assert set(seen) <= {"queued", "dreaming", "completed"}
    url = answer["assets"]["video"]
    assert url == f"{sim.cdn_url}/videos/{gen['id']}.mp4"
    assert requests.get(url, timeout=5).content == clip_path("1:1").read_bytes()
    assert {e["released_by"] for e in sim.requests("dm_get")} == {"immediate"}


def test_fetch_is_never_held(sim: LumaSimulator) -> None:
    sim.script("slow", queued_seconds=60)
    gen = dm_create(sim, "slow")
    t0 = time.monotonic()
    r = dm_get(sim, gen["id"], state="completed")  # a long-poll parameter means nothing here
    assert r.json()["state"] == "queued"
    assert time.monotonic() - t0 < 0.5
    sim.strict_query = True
    assert "state" in detail(dm_get(sim, gen["id"], state="completed"), 400)


def test_a_scripted_failure_shows_its_reason(sim: LumaSimulator) -> None:
    sim.script("storm", outcome="failed", failure_reason="moderation", queued_seconds=0, dreaming_seconds=0)
    answer = dm_get(sim, dm_create(sim, "a storm")["id"]).json()
    assert (answer["state"], answer["failure_reason"], answer["assets"]["video"]) == ("failed", "moderation", None)


def test_families_do_not_see_each_others_generations(sim: LumaSimulator) -> None:
    luma_ai = create(sim)
    assert detail(dm_get(sim, luma_ai["id"]), 404) == "Generation not found"
    ours = dm_create(sim)
    r = requests.get(sim.base_url + GEN, params={"generation_id": ours["id"]}, headers=auth(sim), timeout=5)
    assert r.status_code == 404
    assert r.json()["statusCode"] == 404  # the AI/ML API's envelope there
    r = requests.get(sim.base_url + UNI, params={"generation_id": ours["id"]}, headers=auth(sim), timeout=5)
    assert r.status_code == 404
    assert detail(dm_get(sim, str(uuid.uuid4())), 404) == "Generation not found"


# ---------------------------------------------------------------- list


def test_list_is_newest_first_and_pages(sim: LumaSimulator) -> None:
    create(sim, "not ours")  # another family's: never listed
    ids = [dm_create(sim, f"clip {i}")["id"] for i in range(12)]
    newest_first = ids[::-1]
    page = dm_list(sim).json()
    assert set(page) == {"generations", "has_more", "count", "limit", "offset"}
    assert [g["id"] for g in page["generations"]] == newest_first[:10]  # limit 10 unless asked
    assert (page["count"], page["has_more"], page["limit"], page["offset"]) == (10, True, 10, 0)
    page = dm_list(sim, limit=5, offset=10).json()
    assert [g["id"] for g in page["generations"]] == newest_first[10:]
    assert (page["count"], page["has_more"]) == (2, False)
    page = dm_list(sim, limit=100).json()
    assert [g["id"] for g in page["generations"]] == newest_first
    assert page["generations"][0]["request"]["prompt"] == "clip 11"
    assert dm_list(sim, offset=50).json()["generations"] == []
    (entry,) = [e for e in sim.requests("dm_list") if e["query"] == {"limit": "100"}]
    assert entry["status"] == 200


@pytest.mark.parametrize(("name", "value"), [("limit", 0), ("limit", 101), ("limit", "ten"), ("offset", -1)])
def test_list_refuses_a_bad_page(sim: LumaSimulator, name: str, value: Any) -> None:
    assert name in detail(dm_list(sim, **{name: value}), 400)


# ---------------------------------------------------------------- delete


def test_delete_removes_the_generation_and_is_logged(sim: LumaSimulator) -> None:
    keep = dm_create(sim, "keep")
    gone = dm_create(sim, "gone")
    sim.set_state(gone["id"], "completed")
    video = dm_get(sim, gone["id"]).json()["assets"]["video"]
    r = dm_delete(sim, gone["id"])
    assert (r.status_code, r.content) == (204, b"")
    assert detail(dm_get(sim, gone["id"]), 404) == "Generation not found"
    assert requests.get(video, timeout=5).status_code == 404
    assert [g["id"] for g in dm_list(sim).json()["generations"]] == [keep["id"]]
    assert [g["id"] for g in sim.generations()] == [keep["id"]]
    assert detail(dm_delete(sim, gone["id"]), 404) == "Generation not found"  # a second delete finds nothing
    first, second = sim.requests("dm_delete")
    assert (first["method"], first["path"], first["status"]) == ("DELETE", f"{DM_GENERATIONS}/{gone['id']}", 204)
    assert first["authorization"] == "Bearer ***"
    assert second["status"] == 404
    assert sim.count("dm_delete") == 2


def test_delete_of_another_familys_generation_is_404(sim: LumaSimulator) -> None:
    other = create(sim)
    assert detail(dm_delete(sim, other["id"]), 404) == "Generation not found"
    assert [g["id"] for g in sim.generations()] == [other["id"]]


@pytest.mark.parametrize("after", [False, True])
def test_a_fault_on_delete_says_whether_it_took_effect(sim: LumaSimulator, after: bool) -> None:
    gen = dm_create(sim)
    sim.inject_fault("503", endpoint="dm_delete", after=after)
    assert detail(dm_delete(sim, gen["id"]), 503) == "Service Unavailable"
    assert (dm_get(sim, gen["id"]).status_code == 404) is after
    assert sim.requests("dm_delete")[0]["fault"] == "503"


# ---------------------------------------------------------------- errors, auth, faults


def test_auth_errors_are_details(sim: LumaSimulator) -> None:
    sim.exhausted_keys.add("broke-key")
    body = {"prompt": "x", "model": "ray-2"}
    r = requests.post(sim.base_url + DM_VIDEO, json=body, timeout=5)
    assert "missing Authorization" in detail(r, 401)
    assert "invalid API key" in detail(dm_post(sim, body, key="nope"), 401)
    assert "credits" in detail(dm_post(sim, body, key="broke-key"), 403)
    assert "invalid API key" in detail(dm_get(sim, str(uuid.uuid4()), key="nope"), 401)
    assert "invalid API key" in detail(dm_delete(sim, str(uuid.uuid4()), key="nope"), 401)
    assert sim.generations() == []


@pytest.mark.parametrize("endpoint", ["dm_create", "dm_get", "dm_list", "dm_delete"])
@pytest.mark.parametrize(
    ("kind", "retry_after", "message"),
    [
        ("402", None, "Payment Required: insufficient credits"),
        ("403", None, "Forbidden: insufficient credits on this API key"),
        ("429", None, "Too Many Requests"),
        ("429", 3, "Too Many Requests"),
        ("500", None, "Internal Server Error"),
    ],
)
def test_faults_answer_in_lumas_format(
    sim: LumaSimulator, endpoint: str, kind: str, retry_after: int | None, message: str
) -> None:
    gen = dm_create(sim)
    sim.inject_fault(kind, endpoint=endpoint, retry_after=retry_after)
    call = {
        "dm_create": lambda: dm_post(sim, {"prompt": "x", "model": "ray-2"}),
        "dm_get": lambda: dm_get(sim, gen["id"]),
        "dm_list": lambda: dm_list(sim),
        "dm_delete": lambda: dm_delete(sim, gen["id"]),
    }[endpoint]
    r = call()
    assert detail(r, int(kind)) == message
    assert r.headers.get("Retry-After") == (None if retry_after is None else str(retry_after))
    assert sim.requests(endpoint)[-1]["fault"] == kind
    assert call().status_code < 300  # consumed: the next one is answered


def test_echo_key_in_errors_quotes_the_key_in_the_answer_never_in_the_log() -> None:
    key = "sk-luma-ECHOED-7f3a"
    with LumaSimulator(api_key=key, echo_key_in_errors=True) as sim:
        assert key in detail(dm_get(sim, str(uuid.uuid4())), 404)
        assert "wrong-one" in detail(dm_get(sim, str(uuid.uuid4()), key="wrong-one"), 401)
        sim.inject_fault("429", endpoint="dm_create")
        assert key in detail(dm_post(sim, {"prompt": "x", "model": "ray-2"}), 429)
        r = requests.get(sim.base_url + GEN, params={"generation_id": "x"}, headers=auth(sim), timeout=5)
        assert key in r.json()["message"]  # every family's errors, in its own format
        assert len(sim.requests()) == 4
        assert key not in json.dumps(sim.requests())
        assert key not in requests.get(sim.base_url + "/_sim/requests", timeout=5).text
    with LumaSimulator(api_key=key) as sim:  # off by default
        assert key not in dm_get(sim, str(uuid.uuid4())).text


# ---------------------------------------------------------------- the simulator's other parts


def test_generations_state_file_and_client_render_lumas_shape(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with LumaSimulator(state_file=state, queued_seconds=0, dreaming_seconds=0) as first:
        gen = dm_create(first, "kept")
        rendered = first.generation(gen["id"])
        assert rendered["state"] == "completed"
        assert rendered["assets"]["video"].endswith(f"/videos/{gen['id']}.mp4")
        client = SimulatorClient(first.base_url)
        assert client.generation(gen["id"])["model"] == "ray-2"
        client.set_state(gen["id"], "failed", "later")
        assert dm_get(first, gen["id"]).json()["failure_reason"] == "later"
    with LumaSimulator(state_file=state) as second:
        assert dm_get(second, gen["id"]).json()["state"] == "failed"
        assert dm_delete(second, gen["id"]).status_code == 204
    with LumaSimulator(state_file=state) as third:  # the delete was saved too
        assert dm_get(third, gen["id"]).status_code == 404


def test_random_faults_reach_the_family(sim: LumaSimulator) -> None:
    sim.configure(fault_rate=1.0, fault_kinds=["503"])
    r = dm_list(sim)
    assert detail(r, 503) == "Service Unavailable"
    sim.clear_faults()
    assert dm_list(sim).status_code == 200
