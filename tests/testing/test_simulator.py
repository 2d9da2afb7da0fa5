"""Tests of the local Luma API simulator (airflow_provider_luma.testing)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from airflow_provider_luma.testing import SAMPLE_VIDEO_PATH, LumaSimulator
from airflow_provider_luma.testing.pytest_plugin import luma_simulator  # noqa: F401  (fixture)
from tests.support.simulator_calls import GEN, GENS, auth, create


def get(s: LumaSimulator, gen_id: str, state: str | None = None, timeout: float = 10) -> requests.Response:
    params = {"generation_id": gen_id}
    if state is not None:
        params["state"] = state
    return requests.get(s.base_url + GEN, params=params, headers=auth(s), timeout=timeout)


# ---------------------------------------------------------------- auth


def test_auth_missing_wrong_and_exhausted(sim: LumaSimulator) -> None:
    sim.exhausted_keys.add("broke-key")
    body = {"prompt": "x"}
    r = requests.post(sim.base_url + GEN, json=body, timeout=5)
    assert r.status_code == 401
    err = r.json()
    assert err["statusCode"] == 401
    assert "Unauthorized" in err["message"]
    assert {"path", "requestId", "timestamp"} <= set(err)
    r = requests.post(sim.base_url + GEN, json=body, headers=auth(sim, "nope"), timeout=5)
    assert r.status_code == 401
    r = requests.post(sim.base_url + GEN, json=body, headers={"Authorization": sim.api_key}, timeout=5)
    assert r.status_code == 401
    r = requests.post(sim.base_url + GEN, json=body, headers=auth(sim, "broke-key"), timeout=5)
    assert r.status_code == 403
    assert "credits" in r.json()["message"]
    assert sim.count("create") == 4
    assert sim.generations() == []


# ---------------------------------------------------------------- create


def test_create_returns_generation_object(sim: LumaSimulator) -> None:
    gen = create(sim, "a dog", aspect_ratio="16:9", loop=False, resolution="720p", duration="5s")
    assert gen["state"] == "queued"
    assert gen["generation_type"] == "video"
    assert gen["model"] == "ray-2"
    assert gen["failure_reason"] is None
    assert gen["assets"] == {"video": None, "image": None, "progress_video": None}
    assert gen["request"]["aspect_ratio"] == "16:9"
    assert gen["created_at"].endswith("Z")
    assert sim.requests("create")[0]["json"]["prompt"] == "a dog"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"prompt": "x", "seed": 1}, "seed"),
        ({"prompt": "x", "aspect_ratio": "2:1"}, "aspect_ratio"),
        ({"prompt": "x", "model": "ray-3"}, "model"),
        ({"prompt": "x", "resolution": "8k"}, "resolution"),
        ({"prompt": "x", "duration": 5}, "duration"),
        ({"prompt": "x", "loop": "yes"}, "loop"),
        ({"prompt": "x" * 2049}, "prompt"),
        ({"aspect_ratio": "1:1"}, "prompt"),
        ({"prompt": "x", "keyframes": {"frame0": {"type": "video", "url": "u"}}}, "keyframes.frame0.type"),
        ({"prompt": "x", "keyframes": {"frame2": None}}, "keyframes.frame2"),
        ({"prompt": "x", "keyframes": {"frame0": {"type": "generation", "id": "nope"}}}, "keyframes.frame0.id"),
        (["x"], ""),
    ],
)
def test_create_validation(sim: LumaSimulator, body: Any, path: str) -> None:
    r = requests.post(sim.base_url + GEN, json=body, headers=auth(sim), timeout=5)
    assert r.status_code == 400
    err = r.json()
    assert err["message"] == "Body validation error!"
    assert err["statusCode"] == 400
    assert path in [e["path"] for e in err["errors"]]


def test_create_invalid_json(sim: LumaSimulator) -> None:
    r = requests.post(sim.base_url + GEN, data=b"{nope", headers=auth(sim), timeout=5)
    assert r.status_code == 400


def test_generation_keyframe_requires_completed(sim: LumaSimulator) -> None:
    first = create(sim)
    kf = {"frame0": {"type": "generation", "id": first["id"]}, "frame1": None}
    r = requests.post(sim.base_url + GEN, json={"prompt": "more", "keyframes": kf}, headers=auth(sim), timeout=5)
    assert r.status_code == 400  # still queued
    sim.set_state(first["id"], "completed")
    r = requests.post(sim.base_url + GEN, json={"prompt": "more", "keyframes": kf}, headers=auth(sim), timeout=5)
    assert r.status_code == 201
    img = {"frame0": {"type": "image", "url": "https://example.com/a.jpg"}}
    create(sim, "image", keyframes=img)


# ---------------------------------------------------------------- long poll


def test_long_poll_returns_when_target_reached(sim: LumaSimulator) -> None:
    # A hold far longer than the 0.2 s queue: an answer in half the hold came early, on a loaded machine too.
    sim.hold_seconds = 5.0
    gen = create(sim)
    t0 = time.monotonic()
    r = get(sim, gen["id"], "dreaming")
    assert r.json()["state"] == "dreaming"
    assert 0.1 < time.monotonic() - t0 < sim.hold_seconds / 2
    r = get(sim, gen["id"], "completed")
    done = r.json()
    assert done["state"] == "completed"
    assert done["assets"]["video"] == f"{sim.cdn_url}/videos/{gen['id']}.mp4"


def test_long_poll_returns_on_later_state(sim: LumaSimulator) -> None:
    sim.script("skip", queued_seconds=0.2, dreaming_seconds=0.0)
    gen = create(sim, "skip ahead")
    assert get(sim, gen["id"], "dreaming").json()["state"] == "completed"
    sim.script("doomed", outcome="failed", failure_reason="nsfw", queued_seconds=0.2, dreaming_seconds=0)
    gen = create(sim, "doomed")
    r = get(sim, gen["id"], "completed").json()
    assert r["state"] == "failed"
    assert r["failure_reason"] == "nsfw"
    assert r["assets"]["video"] is None


def test_set_state_wakes_held_request(sim: LumaSimulator) -> None:
    sim.hold_seconds = 5.0
    sim.script("stuck", queued_seconds=60)
    gen = create(sim, "stuck")
    threading.Timer(0.2, sim.set_state, (gen["id"], "failed", "boom")).start()
    t0 = time.monotonic()
    r = get(sim, gen["id"], "completed").json()
    assert time.monotonic() - t0 < sim.hold_seconds / 2
    assert r["state"] == "failed"
    assert r["failure_reason"] == "boom"


def test_long_poll_hold_expires_with_current_state(sim: LumaSimulator) -> None:
    sim.hold_seconds = 0.3
    sim.script("slow", queued_seconds=30)
    gen = create(sim, "slow one")
    t0 = time.monotonic()
    assert get(sim, gen["id"], "completed").json()["state"] == "queued"
    assert 0.25 < time.monotonic() - t0 < 1.0


def test_long_poll_parameters(sim: LumaSimulator) -> None:
    sim.script("slow", queued_seconds=30)
    gen = create(sim, "slow one")
    t0 = time.monotonic()
    assert get(sim, gen["id"]).json()["state"] == "queued"  # no state: at once
    assert time.monotonic() - t0 < 0.2
    assert get(sim, gen["id"], "failed").status_code == 400
    assert get(sim, gen["id"], "bogus").status_code == 400
    r = get(sim, "00000000-0000-0000-0000-000000000000", "completed")
    assert r.status_code == 404
    assert r.json()["statusCode"] == 404
    assert requests.get(sim.base_url + GEN, headers=auth(sim), timeout=5).status_code == 400


def test_ignore_state_param_answers_at_once(sim: LumaSimulator) -> None:
    sim.ignore_state_param = True
    sim.script("slow", queued_seconds=30)
    gen = create(sim, "slow")
    assert get(sim, gen["id"], "completed").json()["state"] == "queued"
    r = requests.get(
        sim.base_url + GENS, params={"generation_ids": gen["id"], "status": "completed"}, headers=auth(sim), timeout=5
    )
    assert r.json()[0]["state"] == "queued"
    # Neither fetch was held (what the simulator logs for each; a clock here would measure the machine).
    fetches = [e for e in sim.requests() if e.get("released_by") is not None]
    assert [(e["held"], e["released_by"]) for e in fetches] == [(0.0, "immediate"), (0.0, "immediate")], fetches


# ---------------------------------------------------------------- multi fetch


@pytest.mark.parametrize("shape", ["list", "generations", "data"])
@pytest.mark.parametrize("form", ["brackets", "comma"])
def test_multi_fetch_forms_and_shapes(sim: LumaSimulator, shape: str, form: str) -> None:
    sim.multi_shape = shape
    sim.script("later", queued_seconds=0.2, dreaming_seconds=0.5)
    a, b = create(sim, "soon"), create(sim, "later")
    ids = [a["id"], b["id"]]
    params = [("generation_ids[]", i) for i in ids] if form == "brackets" else [("generation_ids", ",".join(ids))]
    t0 = time.monotonic()
    r = requests.get(sim.base_url + GENS, params=[*params, ("status", "completed")], headers=auth(sim), timeout=5)
    assert r.status_code == 200
    body = r.json()
    items = body if shape == "list" else body[shape]
    assert [g["id"] for g in items] == ids
    assert all(g["state"] == "completed" for g in items)
    assert 0.55 < time.monotonic() - t0 < 1.0  # waited for the slower one


def test_multi_fetch_returns_early_on_any_failure_and_404(sim: LumaSimulator) -> None:
    sim.hold_seconds = 5.0
    sim.script("slow", queued_seconds=30)
    a, b = create(sim, "slow"), create(sim, "quick [sim:fail]")
    url = sim.base_url + GENS
    t0 = time.monotonic()
    r = requests.get(
        url, params={"generation_ids": f"{a['id']},{b['id']}", "status": "completed"}, headers=auth(sim), timeout=10
    )
    assert time.monotonic() - t0 < 1.5
    assert [g["state"] for g in r.json()] == ["queued", "failed"]
    assert r.json()[1]["failure_reason"] == "simulated failure"
    r = requests.get(url, params={"generation_ids[]": [a["id"], "missing"]}, headers=auth(sim), timeout=5)
    assert r.status_code == 404
    assert requests.get(url, headers=auth(sim), timeout=5).status_code == 400


def test_slow_directive_and_script_order(sim: LumaSimulator) -> None:
    sim.script("cat", outcome="failed", failure_reason="first")
    sim.script("cat", outcome="completed")
    gen = create(sim, "a cat [sim:slow]")
    assert get(sim, gen["id"], "completed").json()["state"] == "queued"  # 10x: 2 s queued > 1 s hold
    g = sim.store.get(gen["id"])
    assert g is not None
    assert g.outcome == "failed"
    assert g.failure_reason == "first"
    assert g.dreaming_at - g.created_at == pytest.approx(2.0)


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "504", "401", "403"])
def test_error_faults(sim: LumaSimulator, kind: str) -> None:
    gen = create(sim)
    sim.inject_fault(kind, endpoint="get", times=2)
    for _ in range(2):
        r = get(sim, gen["id"])
        assert r.status_code == int(kind)
        assert r.json()["statusCode"] == int(kind)
        assert "Retry-After" not in r.headers
    assert get(sim, gen["id"]).status_code == 200
    assert [e["fault"] for e in sim.requests("get")] == [kind, kind, None]


def test_429_retry_after_and_endpoint_matching(sim: LumaSimulator) -> None:
    sim.inject_fault("429", endpoint="list", retry_after=7)
    gen = create(sim)  # not consumed by a create
    r = requests.get(sim.base_url + GENS, params={"generation_ids": gen["id"]}, headers=auth(sim), timeout=5)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "7"


def test_faults_fifo(sim: LumaSimulator) -> None:
    sim.inject_fault("500")
    sim.inject_fault("503", endpoint="create")
    r1 = requests.post(sim.base_url + GEN, json={"prompt": "x"}, headers=auth(sim), timeout=5)
    r2 = requests.post(sim.base_url + GEN, json={"prompt": "x"}, headers=auth(sim), timeout=5)
    assert (r1.status_code, r2.status_code) == (500, 503)
    assert sim.generations() == []


def test_drop_fault(sim: LumaSimulator) -> None:
    gen = create(sim)
    sim.inject_fault("drop", endpoint="get")
    with pytest.raises(requests.ConnectionError):
        get(sim, gen["id"])
    assert sim.requests("get")[-1]["status"] == 0


def test_drop_after_create_still_creates(sim: LumaSimulator) -> None:
    sim.inject_fault("drop", endpoint="create", after=True)
    with pytest.raises(requests.ConnectionError):
        requests.post(sim.base_url + GEN, json={"prompt": "paid"}, headers=auth(sim), timeout=5)
    assert len(sim.generations()) == 1  # billed, but the answer was lost


def test_slow_malformed_missing_fields(sim: LumaSimulator) -> None:
    gen = create(sim)
    sim.inject_fault("slow", endpoint="get", delay=0.5)
    with pytest.raises(requests.ReadTimeout):
        get(sim, gen["id"], timeout=0.2)  # the client gives up first
    assert get(sim, gen["id"]).status_code == 200  # the slow fault was consumed
    sim.inject_fault("slow", endpoint="get", delay=0.3)
    t0 = time.monotonic()
    assert get(sim, gen["id"]).json()["id"] == gen["id"]
    assert time.monotonic() - t0 >= 0.3
    sim.inject_fault("malformed", endpoint="get")
    r = get(sim, gen["id"])
    assert r.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        r.json()
    sim.inject_fault("missing_fields", endpoint="get")
    assert get(sim, gen["id"]).json() == {}


def test_random_faults_are_seeded(sim: LumaSimulator) -> None:
    gen = create(sim)
    sim.fault_rate = 0.5
    sim.fault_kinds = ["503"]
    codes = [get(sim, gen["id"]).status_code for _ in range(20)]
    assert set(codes) == {200, 503}
    sim.clear_faults()
    assert all(get(sim, gen["id"]).ok for _ in range(5))


# ---------------------------------------------------------------- log and redaction


def test_request_log_never_holds_the_key(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    secret = "sk-super-secret-123"
    caplog.set_level("DEBUG")
    with LumaSimulator(api_key=secret, queued_seconds=0, dreaming_seconds=0) as s:
        gen = create(s)
        get(s, gen["id"], "completed")
        requests.get(s.base_url + GEN, headers={"Authorization": "Token abc"}, timeout=5)
        entries = s.requests()
        over_http = requests.get(s.base_url + "/_sim/requests", timeout=5).text
        assert s.count("get") == 2
        assert s.count() == 3
    assert [e["authorization"] for e in entries] == ["Bearer ***", "Bearer ***", "Token ***"]
    assert entries[1]["query"] == {"generation_id": gen["id"], "state": "completed"}
    assert {"time", "method", "path", "endpoint", "query", "status", "authorization", "fault"} <= set(entries[0])
    out = capsys.readouterr()
    for text in (json.dumps(entries), over_http, caplog.text, out.out, out.err):
        assert secret not in text


# ---------------------------------------------------------------- video origin


def test_video_served_from_other_origin(sim: LumaSimulator) -> None:
    sim.script("now", queued_seconds=0, dreaming_seconds=0)
    gen = create(sim, "now")
    url = get(sim, gen["id"], "completed").json()["assets"]["video"]
    assert url.startswith(sim.cdn_url)
    assert sim.cdn_port != sim.port
    r = requests.get(url, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "video/mp4"
    assert r.content == SAMPLE_VIDEO_PATH.read_bytes()
    assert int(r.headers["Content-Length"]) == len(r.content)
    requests.get(url, headers=auth(sim), timeout=5)
    assert [e["authorization"] for e in sim.requests("video")] == [None, "Bearer ***"]
    # Not on the API origin, and not for unfinished generations.
    assert requests.get(sim.base_url + f"/videos/{gen['id']}.mp4", timeout=5).status_code == 404
    other = create(sim, "later")
    assert requests.get(f"{sim.cdn_url}/videos/{other['id']}.mp4", timeout=5).status_code == 404


def test_video_drop_mid_body(sim: LumaSimulator) -> None:
    gen = create(sim)
    sim.set_state(gen["id"], "completed")
    sim.inject_fault("drop", endpoint="video")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{sim.cdn_url}/videos/{gen['id']}.mp4", timeout=5)


# ---------------------------------------------------------------- control endpoints


def test_control_endpoints(sim: LumaSimulator) -> None:
    ctl = sim.base_url + "/_sim"
    health = requests.get(ctl + "/health", timeout=5).json()
    assert health["base_url"] == sim.base_url
    assert health["cdn_url"] == sim.cdn_url
    r = requests.post(
        ctl + "/script", json={"prompt_contains": "bad", "outcome": "failed", "failure_reason": "x"}, timeout=5
    )
    assert r.ok
    assert requests.post(ctl + "/script", json={"prompt_contains": "x", "bogus": 1}, timeout=5).status_code == 400
    gen = create(sim, "bad idea")
    assert get(sim, gen["id"], "completed").json()["failure_reason"] == "x"
    assert requests.post(ctl + "/faults", json={"kind": "502", "endpoint": "get"}, timeout=5).ok
    assert requests.post(ctl + "/faults", json={"kind": "999"}, timeout=5).status_code == 400
    assert get(sim, gen["id"]).status_code == 502
    other = create(sim, "ok")
    assert requests.post(ctl + "/state", json={"id": other["id"], "state": "dreaming"}, timeout=5).ok
    assert get(sim, other["id"]).json()["state"] == "dreaming"
    assert requests.post(ctl + "/state", json={"id": "nope", "state": "dreaming"}, timeout=5).status_code == 404
    r = requests.post(ctl + "/config", json={"multi_shape": "data", "hold_seconds": 0.5}, timeout=5)
    assert r.ok
    assert sim.multi_shape == "data"
    assert sim.hold_seconds == 0.5
    logged = requests.get(ctl + "/requests", params={"endpoint": "get"}, timeout=5).json()
    assert [e["status"] for e in logged] == [200, 502, 200]
    assert len(requests.get(ctl + "/generations", timeout=5).json()) == 2
    assert requests.post(ctl + "/reset", timeout=5).ok
    assert sim.generations() == []
    assert sim.requests() == []


# ---------------------------------------------------------------- lifecycle


def test_state_file_survives_restart_on_same_port(tmp_path: Path) -> None:
    state = tmp_path / "sim" / "state.json"
    s1 = LumaSimulator(state_file=state, queued_seconds=0.2, dreaming_seconds=0.2, hold_seconds=2)
    s1.start()
    port, cdn_port = s1.port, s1.cdn_port
    gen = create(s1)
    s1.stop()
    assert json.loads(state.read_text())["generations"][0]["id"] == gen["id"]
    with LumaSimulator(port=port, cdn_port=cdn_port, state_file=state, hold_seconds=2) as s2:
        assert s2.port == port
        done = get(s2, gen["id"], "completed").json()
        assert done["state"] == "completed"
        assert done["created_at"] == gen["created_at"]
        assert requests.get(done["assets"]["video"], timeout=5).ok
    # The same instance can be restarted too, on the same ports.
    s1.start()
    try:
        assert s1.port == port
        assert get(s1, gen["id"]).ok
    finally:
        s1.stop()


def test_stop_releases_held_requests() -> None:
    s = LumaSimulator(hold_seconds=30, queued_seconds=60).start()
    gen = create(s)
    result: dict[str, Any] = {}

    def poll() -> None:
        try:
            result["state"] = get(s, gen["id"], "completed").json()["state"]
        except requests.RequestException as exc:
            result["error"] = exc

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    s.stop()
    t.join(5)
    assert time.monotonic() - t0 < 3
    assert result.get("state") == "queued" or "error" in result


def test_plugin_fixture(luma_simulator: LumaSimulator) -> None:  # noqa: F811
    assert luma_simulator.hold_seconds == 2.0
    conn = json.loads(luma_simulator.connection_json())
    assert conn == {"conn_type": "luma", "host": luma_simulator.base_url, "password": luma_simulator.api_key}
    assert requests.get(luma_simulator.base_url + "/_sim/health", timeout=5).ok


@pytest.mark.asyncio
async def test_many_concurrent_long_polls_in_loop() -> None:
    n = 500
    s = LumaSimulator(hold_seconds=5, queued_seconds=0.3, dreaming_seconds=0.3)
    await s.astart()
    try:
        headers = auth(s)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn, headers=headers) as http:
            async with http.post(s.base_url + GEN, json={"prompt": "crowd"}) as r:
                gen_id = (await r.json())["id"]

            async def poll() -> str:
                params = {"generation_id": gen_id, "state": "completed"}
                async with http.get(s.base_url + GEN, params=params) as resp:
                    return (await resp.json())["state"]

            t0 = time.monotonic()
            states = await asyncio.gather(*(poll() for _ in range(n)))
            assert set(states) == {"completed"}
            assert time.monotonic() - t0 < 3
    finally:
        await s.astop()
    assert s.count("get") == n


def test_cli_prints_url_without_custom_key(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [
        sys.executable,
        "-m",
        "airflow_provider_luma.testing",
        "--port",
        "0",
        "--cdn-port",
        "0",
        "--api-key",
        "sk-cli-secret",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line
        assert "AIRFLOW_CONN_LUMA_DEFAULT" in line
        assert "sk-cli-secret" not in line
        assert '"password": "***"' in line
        base = line.split()[3]
        assert requests.get(base + "/_sim/health", timeout=5).ok
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "sk-cli-secret" not in err
