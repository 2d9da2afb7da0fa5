"""
Nothing escapes the trigger and nothing an answer carries crashes a wait (issue 11, items 4 and 8).

Every failure but cancellation ends in exactly one ``error`` event with a clear message; answers are
decoded by the provider (UTF-8, replacement), whatever charset they claim; 408 and 409 are transient
for fetches; ``Retry-After`` as an HTTP date is honoured and ``0`` does not mean "at once"; a TLS
certificate failure is "never connected". A small loopback relay in front of the simulator plays the
answers the simulator has no fault for (another charset, 408, 409, ``Retry-After`` as a date).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import ssl
import threading
import time
from collections.abc import Iterator
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_luma.errors import LumaConnectionError, LumaForbiddenError
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.testing import LumaSimulator
from airflow_provider_luma.triggers.luma import LumaGenerationTrigger
from tests.support.connection import SENTINEL_KEY
from tests.support.events import the_event
from tests.support.relay import Relay, Rewrite, create, relay_connection

SINGLE = "/luma-ai/generation"


def created(sim: LumaSimulator, prompt: str = "a quiet harbour") -> str:
    """A generation made directly on the simulator (not through the relay)."""
    sim.script(prompt, queued_seconds=0.1, dreaming_seconds=0.1)
    answer = requests.post(
        sim.base_url + "/v2/generate/video/luma-ai/generation",
        json={"prompt": prompt},
        headers={"Authorization": f"Bearer {sim.api_key}"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["id"]


# -- item 4: anything escaping the trigger ------------------------------------------------------


async def test_an_answer_with_charset_base64_still_yields_exactly_one_event(luma_conn):
    generation = await LumaHook().acreate_generation("base64 harbour")
    luma_conn.inject_fault("charset_base64", endpoint="get", times=3)
    event = await the_event(LumaGenerationTrigger([generation.id], deadline=time.time() + 30))
    # Decoded as UTF-8 whatever the header claims: the answer is read, not merely survived.
    assert event["status"] == "success", event
    assert any(r["fault"] == "charset_base64" for r in luma_conn.requests("get"))


@pytest.mark.parametrize("charset", ["idna", "base64", "no-such-codec"])
async def test_any_claimed_charset_is_read_as_utf8_by_the_trigger(simulator, relay, charset):
    generation_id = created(simulator)
    relay.rewrite(Rewrite(SINGLE, times=5, content_type=f"application/json; charset={charset}"))
    event = await the_event(LumaGenerationTrigger([generation_id], deadline=time.time() + 30))
    assert event["status"] == "success", event
    assert relay.sent(SINGLE)


@pytest.mark.parametrize("charset", ["idna", "base64"])
def test_any_claimed_charset_is_read_as_utf8_by_the_worker(simulator, relay, charset):
    generation_id = created(simulator)
    relay.rewrite(Rewrite(SINGLE, times=5, content_type=f"application/json; charset={charset}"))
    assert LumaHook().get_generation(generation_id).id == generation_id


@pytest.mark.parametrize(
    ("where", "error"),
    [
        ("asettings", RuntimeError("secrets backend unreachable")),
        ("apoll", ValueError("URL has userinfo")),
        ("apoll", LookupError("unknown encoding: base64")),
        ("apoll", UnicodeError("label empty or too long")),
        ("apoll", KeyError(f"Bearer {SENTINEL_KEY}")),
    ],
    ids=["secrets-backend", "value-error", "lookup-error", "unicode-error", "key-in-message"],
)
async def test_any_exception_ends_in_one_error_event(luma_conn, monkeypatch, caplog, capsys, where, error):
    generation = await LumaHook().acreate_generation("doomed harbour")

    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(LumaHook, where, boom)
    event = await the_event(LumaGenerationTrigger([generation.id], deadline=time.time() + 30))
    assert event["status"] == "error"
    assert event["message"].startswith(f"The Luma wait failed unexpectedly ({type(error).__name__}: ")
    assert SENTINEL_KEY not in event["message"]  # the_event checks it too; said here for the reader
    if where == "asettings":
        assert "secrets backend unreachable" in event["message"]


async def test_a_trigger_that_cannot_even_build_its_hook_yields_one_error_event(monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no hook today")

    monkeypatch.setattr(LumaHook, "__init__", broken)
    event = await the_event(LumaGenerationTrigger(["4f1c0000-0000-4000-8000-000000000001"], deadline=None))
    assert event == {
        "v": 1,
        "status": "error",
        "message": "The Luma wait failed unexpectedly (RuntimeError: no hook today).",
        "generations": [],
    }


async def test_cancellation_is_not_turned_into_an_event(luma_conn):
    luma_conn.script("endless harbour", queued_seconds=600)
    generation = await LumaHook().acreate_generation("endless harbour")
    events: list[Any] = []

    async def consume() -> None:
        async for event in LumaGenerationTrigger([generation.id], deadline=time.time() + 60).run():
            events.append(event)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == []


# -- item 8: transient vs permanent on fetches ----------------------------------------------------


@pytest.mark.parametrize("status", [408, 409])
def test_408_and_409_are_transient_for_a_fetch(simulator, relay, status):
    generation_id = created(simulator)
    relay.rewrite(Rewrite(SINGLE, times=1, status=status))
    assert LumaHook().get_generation(generation_id).id == generation_id
    assert [s for _, s in relay.sent(SINGLE)] == [status, 200]


@pytest.mark.parametrize("status", [408, 409])
async def test_408_and_409_never_end_a_trigger_wait(simulator, monkeypatch, status):
    proxy = Relay(simulator.base_url)
    try:
        monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", relay_connection(simulator, proxy.base_url, max_retries=0))
        generation_id = created(simulator)
        proxy.rewrite(Rewrite(SINGLE, times=2, status=status))
        event = await the_event(LumaGenerationTrigger([generation_id], deadline=time.time() + 30))
    finally:
        proxy.stop()
    assert event["status"] == "success", event


def test_retry_after_as_an_http_date_is_honoured(simulator, relay):
    generation_id = created(simulator)
    # HTTP dates have whole seconds: "now + 3 s" is between 2 and 3 s away when it is sent.
    when = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(seconds=3)
    relay.rewrite(Rewrite(SINGLE, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)}))
    LumaHook().get_generation(generation_id)
    (first, _), (second, _) = relay.sent(SINGLE)
    # Our own back-off's first step is 0.5 s plus at most 0.5 s of jitter: only the date explains more.
    assert second - first >= 1.5


@pytest.mark.parametrize("value", ["0", "-3"])
def test_retry_after_zero_is_not_a_hot_loop(simulator, relay, value):
    generation_id = created(simulator)
    relay.rewrite(Rewrite(SINGLE, times=2, status=429, headers={"Retry-After": value}))
    LumaHook().get_generation(generation_id)
    times = [t for t, _ in relay.sent(SINGLE)]
    assert len(times) == 3
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.45


def test_403_says_out_of_credits_or_over_the_limit_with_the_servers_words(luma_conn):
    generation = LumaHook().create_generation("credit harbour")
    luma_conn.inject_fault("403", endpoint="get")
    with pytest.raises(LumaForbiddenError) as caught:
        LumaHook().get_generation(generation.id)
    message = caught.value.message
    assert "out of credits or over the plan's limit" in message
    assert caught.value.server_message
    assert caught.value.server_message in message
    assert not caught.value.transient


# -- item 8: a TLS certificate failure is "never connected" ------------------------------------------


@pytest.fixture
def untrusted_tls_server(tmp_path: Path) -> Iterator[str]:
    """A loopback TLS server whose self-signed certificate no client trusts; its https URL."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # never reached: the client refuses the certificate
            self.send_response(201)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_certificate_failure_is_never_connected_so_a_create_may_not_exist(untrusted_tls_server, monkeypatch, path):
    conn = {"conn_type": "luma", "host": untrusted_tls_server, "password": SENTINEL_KEY, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(conn))
    with pytest.raises(LumaConnectionError) as caught:
        create(path, "tls harbour")
    assert not caught.value.request_sent
    assert not caught.value.maybe_created
    assert "could not be reached" in caught.value.message
    assert "may have been created" not in caught.value.message
