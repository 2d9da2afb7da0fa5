"""Simulator: the new fault kinds, and the middlewares (auth, fault consumption, redaction).

Real HTTP on 127.0.0.1; assertions rest on answers, raw bytes and the request log.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

import pytest
import requests

from airflow_provider_luma.testing import ENDPOINTS, FAULT_KINDS, LOG_ENDPOINTS, SAMPLE_VIDEO_PATH, LumaSimulator
from airflow_provider_luma.testing.process import SimulatorProcess
from tests.support.simulator_calls import GEN, GENS, UNI, auth

SAMPLE = SAMPLE_VIDEO_PATH.read_bytes()


def post(s: LumaSimulator, path: str = GEN, key: str | None = None, **body: Any) -> requests.Response:
    payload = {"prompt": "a cat", **({"model": "luma/ray-2"} if path == UNI else {}), **body}
    return requests.post(s.base_url + path, json=payload, headers=auth(s, key), timeout=10)


def fetch(s: LumaSimulator, endpoint: str, gen_id: str, key: str | None = None) -> requests.Response:
    path, params = {
        "get": (GEN, {"generation_id": gen_id}),
        "list": (GENS, {"generation_ids": gen_id}),
        "video_get": (UNI, {"generation_id": gen_id}),
    }[endpoint]
    return requests.get(s.base_url + path, params=params, headers=auth(s, key), timeout=10)


def completed(s: LumaSimulator, universal: bool = False) -> str:
    r = post(s, UNI if universal else GEN)
    gen_id = str(r.json()["id"])
    s.set_state(gen_id, "completed")
    return gen_id


def video_url(s: LumaSimulator, gen_id: str) -> str:
    return f"{s.cdn_url}/videos/{gen_id.partition(':')[0]}.mp4"


def test_exported_names() -> None:
    assert {"html", "charset_base64", "empty", "short_body", "tiny_video", "huge"} <= set(FAULT_KINDS)
    families = {"create", "get", "list", "video_create", "video_get", "dm_create", "dm_get", "dm_list", "dm_delete"}
    assert families | {"video", "any"} == set(ENDPOINTS)
    assert "other" in LOG_ENDPOINTS


# ---------------------------------------------------------------- html / charset / empty


@pytest.mark.parametrize(
    ("endpoint", "status"), [("create", 201), ("video_create", 200), ("get", 200), ("list", 200), ("video_get", 200)]
)
def test_html_fault(sim: LumaSimulator, endpoint: str, status: int) -> None:
    gen_id = completed(sim, universal=endpoint.startswith("video"))
    sim.inject_fault("html", endpoint=endpoint)
    r = post(sim, UNI if endpoint == "video_create" else GEN) if "create" in endpoint else fetch(sim, endpoint, gen_id)
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.text.lstrip().startswith("<!DOCTYPE html>")
    with pytest.raises(requests.JSONDecodeError):
        r.json()
    assert len(sim.generations()) == 1  # a fault before the create: nothing made
    assert sim.requests(endpoint)[-1]["fault"] == "html"


@pytest.mark.parametrize("kind", ["html", "empty", "huge", "500", "drop"])
@pytest.mark.parametrize("path", [GEN, UNI])
def test_after_faults_still_create(sim: LumaSimulator, kind: str, path: str) -> None:
    endpoint = "create" if path == GEN else "video_create"
    sim.inject_fault(kind, endpoint=endpoint, after=True)
    if kind == "drop":
        with pytest.raises(requests.ConnectionError):
            post(sim, path, prompt="paid")
    else:
        r = post(sim, path, prompt="paid")
        assert r.status_code == (500 if kind == "500" else 201 if path == GEN else 200)
    gens = sim.generations()
    assert len(gens) == 1  # billed, whatever came back
    (entry,) = sim.requests(endpoint)
    assert entry["fault"] == kind
    assert entry["json"]["prompt"] == "paid"


def test_charset_base64_fault(sim: LumaSimulator) -> None:
    sim.inject_fault("charset_base64", endpoint="create")
    r = post(sim)
    assert r.status_code == 201
    assert r.headers["Content-Type"] == "application/json; charset=base64"
    body = json.loads(r.content)  # the bytes are plain JSON: only the label lies
    assert body["state"] == "queued"
    assert [g["id"] for g in sim.generations()] == [body["id"]]  # the request took effect
    sim.inject_fault("charset_base64", endpoint="video_get")
    gen_id = completed(sim, universal=True)
    r = fetch(sim, "video_get", gen_id)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json; charset=base64"
    assert json.loads(r.content)["status"] == "completed"


@pytest.mark.parametrize(("endpoint", "status"), [("create", 201), ("get", 200), ("video_get", 200)])
def test_empty_fault(sim: LumaSimulator, endpoint: str, status: int) -> None:
    gen_id = completed(sim, universal=endpoint == "video_get")
    sim.inject_fault("empty", endpoint=endpoint)
    r = post(sim) if endpoint == "create" else fetch(sim, endpoint, gen_id)
    assert r.status_code == status
    assert r.content == b""
    assert r.headers["Content-Length"] == "0"
    assert fetch(sim, "video_get" if endpoint == "video_get" else "get", gen_id).ok  # consumed


def test_empty_fault_on_video(sim: LumaSimulator) -> None:
    gen_id = completed(sim)
    sim.inject_fault("empty", endpoint="video")
    r = requests.get(video_url(sim, gen_id), timeout=5)
    assert (r.status_code, r.content) == (200, b"")


# ---------------------------------------------------------------- huge


def test_huge_fault(sim: LumaSimulator) -> None:
    gen_id = completed(sim)
    sim.inject_fault("huge", endpoint="get")
    r = fetch(sim, "get", gen_id)
    assert r.status_code == 200
    assert len(r.content) > 20_000_000
    body = r.json()
    assert set(body) == {"padding"}
    sim.inject_fault("huge", endpoint="get", after=True)
    body = fetch(sim, "get", gen_id).json()
    assert body["id"] == gen_id  # after: the normal answer, padded
    assert body["state"] == "completed"
    assert len(body["padding"]) >= 20 * 1024 * 1024


# ---------------------------------------------------------------- video-only faults


def _raw_get(url: str) -> tuple[dict[str, str], bytes]:
    """GET over a bare socket; read until the server closes. Returns (headers, body bytes)."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):  # b"" on a clean close (a reset would raise)
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    headers[":status"] = lines[0].split()[1]
    return headers, body


def test_short_body_fault(sim: LumaSimulator) -> None:
    gen_id = completed(sim, universal=True)
    url = video_url(sim, gen_id)
    sim.inject_fault("short_body", endpoint="video")
    headers, body = _raw_get(url)
    assert headers[":status"] == "200"
    assert int(headers["content-length"]) > len(body)
    assert body == SAMPLE  # everything sent was right, just less than promised
    sim.inject_fault("short_body", endpoint="video")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=5)
    assert requests.get(url, timeout=5).content == SAMPLE
    assert [e["fault"] for e in sim.requests("video")] == ["short_body", "short_body", None]


def test_tiny_video_fault(sim: LumaSimulator) -> None:
    gen_id = completed(sim)
    sim.inject_fault("tiny_video", endpoint="any")  # only a video download takes it
    assert fetch(sim, "get", gen_id).ok
    r = requests.get(video_url(sim, gen_id), timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "video/mp4"
    assert len(r.content) == 5
    assert [e["fault"] for e in sim.requests()] == [None, None, "tiny_video"]


@pytest.mark.parametrize("kind", ["short_body", "tiny_video"])
@pytest.mark.parametrize("endpoint", ["create", "get", "list", "video_create", "video_get"])
def test_video_only_faults_refused_elsewhere(sim: LumaSimulator, kind: str, endpoint: str) -> None:
    with pytest.raises(ValueError, match="video"):
        sim.inject_fault(kind, endpoint=endpoint)
    r = requests.post(sim.base_url + "/_sim/faults", json={"kind": kind, "endpoint": endpoint}, timeout=5)
    assert r.status_code == 400


def test_random_faults_skip_video_only_kinds(sim: LumaSimulator) -> None:
    gen_id = completed(sim)
    sim.fault_rate = 1.0
    sim.fault_kinds = ["short_body", "tiny_video", "503"]
    assert {fetch(sim, "get", gen_id).status_code for _ in range(10)} == {503}
    sim.fault_kinds = ["short_body"]
    assert fetch(sim, "get", gen_id).ok


# ---------------------------------------------------------------- middleware: auth, faults, log


@pytest.mark.parametrize("endpoint", ["create", "get", "list", "video_create", "video_get"])
def test_auth_on_every_api_endpoint(sim: LumaSimulator, endpoint: str) -> None:
    sim.exhausted_keys.add("broke-key")
    gen_id = completed(sim, universal=endpoint.startswith("video"))

    def call(key: str | None) -> requests.Response:
        if endpoint == "create":
            return post(sim, GEN, key=key)
        if endpoint == "video_create":
            return post(sim, UNI, key=key)
        return fetch(sim, endpoint, gen_id, key=key)

    r = call("nope")
    assert r.status_code == 401
    assert "Unauthorized" in r.json()["message"]
    assert call("broke-key").status_code == 403
    path = UNI if endpoint.startswith("video") else GEN if endpoint in ("create", "get") else GENS
    method = requests.post if "create" in endpoint else requests.get
    assert method(sim.base_url + path, timeout=5).status_code == 401
    assert len(sim.generations()) == 1
    assert [e["status"] for e in sim.requests(endpoint)][-3:] == [401, 403, 401]
    # The video origin needs no key.
    assert requests.get(video_url(sim, gen_id), timeout=5).ok


def test_faults_consumed_per_endpoint(sim: LumaSimulator) -> None:
    old = completed(sim)
    new = completed(sim, universal=True)
    sim.inject_fault("503", endpoint="video_get", times=2)
    sim.inject_fault("502", endpoint="video_create")
    sim.inject_fault("429", endpoint="list", retry_after=3)
    # Other endpoints pass untouched.
    assert fetch(sim, "get", old).ok
    assert post(sim).status_code == 201
    assert requests.get(video_url(sim, new), timeout=5).ok
    assert requests.get(sim.base_url + "/nowhere", timeout=5).status_code == 404
    assert [fetch(sim, "video_get", new).status_code for _ in range(3)] == [503, 503, 200]
    assert [post(sim, UNI).status_code for _ in range(2)] == [502, 200]
    r = fetch(sim, "list", old)
    assert (r.status_code, r.headers["Retry-After"]) == (429, "3")
    faulted = {(e["endpoint"], e["fault"]) for e in sim.requests() if e["fault"]}
    assert faulted == {("video_get", "503"), ("video_create", "502"), ("list", "429")}
    assert sim.count("video_get") == 3
    assert sim.count("other") == 1


def test_fault_before_auth_and_drop_logged(sim: LumaSimulator) -> None:
    sim.inject_fault("drop", endpoint="video_get")
    with pytest.raises(requests.ConnectionError):
        fetch(sim, "video_get", "whatever", key="wrong")
    sim.inject_fault("slow", endpoint="video_create", delay=0.2)
    assert post(sim, UNI, key="wrong").status_code == 401
    entries = sim.requests()
    assert [(e["endpoint"], e["status"], e["fault"]) for e in entries] == [
        ("video_get", 0, "drop"),
        ("video_create", 401, "slow"),
    ]
    assert entries[1]["elapsed"] >= 0.2


def test_key_redacted_in_log_for_every_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "sk-universal-secret-456"
    with LumaSimulator(api_key=secret, queued_seconds=0, dreaming_seconds=0) as s:
        gen_id = requests.post(
            s.base_url + UNI, json={"model": "luma/ray-2", "prompt": "x"}, headers=auth(s), timeout=5
        ).json()["id"]
        url = requests.get(s.base_url + UNI, params={"generation_id": gen_id}, headers=auth(s), timeout=5).json()
        requests.get(url["video"]["url"], headers=auth(s), timeout=5)
        requests.get(s.base_url + "/v2/unknown", headers=auth(s), timeout=5)
        s.luma_ai_routes_gone = True
        requests.post(s.base_url + GEN, json={"prompt": "x"}, headers=auth(s), timeout=5)
        entries = s.requests()
        over_http = requests.get(s.base_url + "/_sim/requests", timeout=5).text
    assert [e["endpoint"] for e in entries] == ["video_create", "video_get", "video", "other", "create"]
    assert all(e["authorization"] == "Bearer ***" for e in entries)
    out = capsys.readouterr()
    for text in (json.dumps(entries), over_http, out.out, out.err):
        assert secret not in text


def test_control_calls_not_logged(sim: LumaSimulator) -> None:
    for path in ("/_sim/health", "/_sim/requests", "/_sim/generations"):
        assert requests.get(sim.base_url + path, timeout=5).ok
    assert sim.requests() == []


def test_cli_flags() -> None:
    flags = [
        "--single-hold-param",
        "status",
        "--multi-hold-param",
        "state",
        "--strict-query",
        "--luma-ai-routes-gone",
        "--universal-id-field",
        "generation_id",
        "--universal-no-id-suffix",
        "--universal-status-words",
        "queued=waiting,dreaming=active",
    ]
    with SimulatorProcess(flags) as remote:
        base, key = remote.base_url, {"Authorization": f"Bearer {remote.api_key}"}
        r = requests.post(base + UNI, json={"model": "luma/ray-2", "prompt": "x"}, headers=key, timeout=5)
        assert set(r.json()) == {"generation_id", "status"}
        assert r.json()["status"] == "waiting"
        assert ":" not in r.json()["generation_id"]
        assert requests.post(base + GEN, json={"prompt": "x"}, headers=key, timeout=5).json()["error"] == "Not Found"
        r = requests.get(base + UNI, params={"generation_id": "x", "state": "queued"}, headers=key, timeout=5)
        assert r.json()["message"] == "Query validation error!"
        cfg = requests.post(base + "/_sim/config", json={}, timeout=5).json()
        assert (cfg["single_hold_param"], cfg["multi_hold_param"]) == ("status", "state")
    assert remote.process.returncode == 0  # SIGTERM ends it cleanly
    bad = subprocess.run(
        [sys.executable, "-m", "airflow_provider_luma.testing", "--universal-status-words", "running=x"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
