"""A hostile or broken answer cannot write outside the destination, make the worker fetch an internal
address, or fill memory or disk (issue 11, items 1-3).

Loopback only: host names are mapped to addresses through the download's resolver seam, and every
socket ``connect`` is watched, so that a refusal is shown to happen before any connection.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tenacity

from airflow_provider_luma.errors import LumaConnectionError, LumaError, LumaResponseError, LumaServerError
from airflow_provider_luma.hooks import download, transport
from airflow_provider_luma.hooks.luma import LumaHook
from airflow_provider_luma.models import Generation
from airflow_provider_luma.testing import SAMPLE_VIDEO_PATH, LumaSimulator
from tests.support.connection import SENTINEL_KEY, connection_json

pytestmark = pytest.mark.timeout(60)

SAMPLE = SAMPLE_VIDEO_PATH.read_bytes()
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (transport, download):
        monkeypatch.setattr(module, "RETRY_BACKOFF", tenacity.wait_fixed(0.01))


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address a socket of this process connects to; anything but loopback is stopped, never sent."""
    seen: list[tuple[str, int]] = []
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        host, port = address[0], address[1]
        seen.append((host, port))
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise OSError(f"test guard: no connection to {host} from the tests")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


def names(mapping: dict[str, str], calls: list[tuple[str, int]] | None = None) -> Callable[[str, int], list[str]]:
    """A resolver seam: ``mapping`` host name → address; records its calls."""

    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append((host, port))
        return [mapping[host]] if host in mapping else []

    return resolve


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[tuple[str, int]]]:
    """Install a name → address mapping as the downloads' resolver; returns the list of its calls."""

    def install(mapping: dict[str, str]) -> list[tuple[str, int]]:
        calls: list[tuple[str, int]] = []
        from airflow_provider_luma.hooks import video_url

        monkeypatch.setattr(video_url, "default_resolver", names(mapping, calls))
        return calls

    return install


def completed_video(sim: LumaSimulator) -> dict[str, Any]:
    hook = LumaHook()
    generation = hook.create_generation("a fox")
    sim.set_state(generation.id, "completed")
    return hook.get_generation(generation.id).to_dict()


def at(video: dict[str, Any], url: str) -> dict[str, Any]:
    """``video`` with its video URL replaced (``assets.video`` is read before ``video_url``)."""
    return {**video, "assets": {**(video.get("assets") or {}), "video": url}, "video_url": url}


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- 1. ids never name a path ----------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["../../escape", "ABSOLUTE", "..", "a/../../b"])
def test_an_id_cannot_write_outside_the_destination(luma_conn, tmp_path: Path, hostile: str):
    if hostile == "ABSOLUTE":  # like "/etc/cron.d/x", but inside tmp_path should the old bug write it
        hostile = str(tmp_path / "outside" / "x")
    video = {**completed_video(luma_conn), "id": hostile}
    folder = tmp_path / "deep" / "er" / "videos"
    written = LumaHook().download_video(video, f"{folder}/")
    assert written.parent == folder
    assert written.read_bytes() == SAMPLE
    assert files_under(tmp_path) == [f"deep/er/videos/{written.name}"]  # nothing anywhere else
    assert not written.name.startswith(".")


def test_a_universal_id_gives_a_readable_file_name(luma_conn, tmp_path: Path):
    video = {**completed_video(luma_conn), "id": "7c880e75-1a2b-4c3d-8e9f-0123456789ab:luma/ray-2"}
    written = LumaHook().download_video(video, tmp_path, into_folder=True)
    assert written == tmp_path / "7c880e75-1a2b-4c3d-8e9f-0123456789ab_luma_ray-2.mp4"
    assert files_under(tmp_path) == [written.name]


def test_an_id_cannot_leave_an_object_storage_folder(luma_conn, tmp_path: Path):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    video = {**completed_video(luma_conn), "id": "../../escape"}
    written = LumaHook().download_video(video, ObjectStoragePath(f"file://{tmp_path}/store/"), into_folder=True)
    assert files_under(tmp_path) == [f"store/{written.name}"]


def test_a_fetched_generation_must_be_the_one_asked_for():
    other = Generation.from_api({"id": "someone-else", "state": "completed", "video_url": "https://cdn.test/v.mp4"})
    with pytest.raises(LumaResponseError, match="answered a fetch of generation mine with someone-else"):
        download.resolve_generation("mine", lambda _id: other)
    universal = Generation.from_api({"id": "abc:luma/ray-2", "state": "completed"})
    assert download.resolve_generation("abc", lambda _id: universal) is universal  # the same one, suffixed


# -- 2. the video URL is checked before any connection ----------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fe80::1]/x.mp4",
        "https://[::ffff:169.254.169.254]/x.mp4",
    ],
)
def test_a_video_url_on_the_metadata_address_is_refused_before_any_connection(luma_conn, tmp_path, connects, url):
    video = at(completed_video(luma_conn), url)
    connects.clear()
    with pytest.raises(LumaError, match="link-local") as raised:
        LumaHook().download_video(video, tmp_path / "clip.mp4", max_retries=2)
    assert not raised.value.transient
    assert connects == []  # refused before any connection: not even one attempt
    assert files_under(tmp_path) == []


def test_a_name_resolving_to_the_metadata_address_is_refused_before_any_connection(
    luma_conn, tmp_path, connects, resolver
):
    calls = resolver({"metadata.test": "169.254.169.254"})
    video = at(completed_video(luma_conn), "https://metadata.test/latest/meta-data/")
    connects.clear()
    with pytest.raises(LumaError, match=r"'metadata.test' \(169.254.169.254\).*link-local"):
        LumaHook().download_video(video, tmp_path / "clip.mp4", max_retries=2)
    assert calls == [("metadata.test", 443)]
    assert connects == []


def test_a_name_that_does_not_resolve_is_retried_like_a_connection_never_made(luma_conn, tmp_path, connects, resolver):
    calls = resolver({})
    video = at(completed_video(luma_conn), "https://nowhere.test/v.mp4")
    connects.clear()
    with pytest.raises(LumaConnectionError, match=r"'nowhere\.test' could not be resolved"):
        LumaHook().download_video(video, tmp_path / "clip.mp4", max_retries=2)
    assert calls == [("nowhere.test", 443)] * 3
    assert connects == []


def test_the_download_connects_to_the_address_it_checked(luma_conn, tmp_path, connects, monkeypatch):
    # DNS rebinding: a second lookup would say 169.254.169.254; the download must never make one.
    answers = iter(["127.0.0.1"])
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return [next(answers, "169.254.169.254")]

    from airflow_provider_luma.hooks import video_url

    monkeypatch.setattr(video_url, "default_resolver", rebinding)
    video = completed_video(luma_conn)
    video = at(video, video["video_url"].replace("127.0.0.1", "cdn.test"))
    connects.clear()
    written = LumaHook().download_video(video, tmp_path / "clip.mp4")
    assert written.read_bytes() == SAMPLE
    assert calls == ["cdn.test"]
    assert connects == [("127.0.0.1", luma_conn.cdn_port)]


def test_loopback_and_private_hosts_are_refused_unless_the_connection_allows_them(
    simulator, monkeypatch, tmp_path, connects, resolver
):
    resolver({"intranet.test": "10.1.2.3"})
    conn = json.loads(connection_json(simulator))
    video = completed_video_on(simulator, monkeypatch)
    remote = {**conn, "host": "https://api.example.test"}  # the API is not on this machine
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(remote))
    connects.clear()
    for url in (video["video_url"], "https://intranet.test/v.mp4", "https://[::1]/v.mp4", "https://100.100.100.200/"):
        with pytest.raises(LumaError, match=r"loopback or private address.*allow_private_video_hosts"):
            LumaHook().download_video(at(video, url), tmp_path / "clip.mp4")
    assert connects == []
    allowed = {**remote, "extra": {**remote["extra"], "allow_private_video_hosts": True}}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps(allowed))
    assert LumaHook().download_video(video, tmp_path / "clip.mp4").read_bytes() == SAMPLE


def completed_video_on(sim: LumaSimulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(sim))
    return completed_video(sim)


def test_plain_http_to_a_public_host_is_refused(luma_conn, tmp_path, connects, resolver):
    resolver({"cdn.test": "93.184.216.34"})
    video = at(completed_video(luma_conn), "http://cdn.test/v.mp4")
    connects.clear()
    with pytest.raises(LumaError, match="over plain http: the video host must use https"):
        LumaHook().download_video(video, tmp_path / "clip.mp4")
    assert connects == []


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://user:hunter2@127.0.0.1:{port}/videos/x.mp4", "carries a user name"),
        ("http://evil\\@127.0.0.1:{port}/videos/x.mp4", "backslash"),
        ("ftp://127.0.0.1:{port}/x.mp4", "not an https URL"),
        ("file:///etc/passwd", "not an https URL"),
    ],
)
def test_urls_that_parsers_read_differently_are_refused(luma_conn, tmp_path, connects, url, match):
    video = at(completed_video(luma_conn), url.format(port=luma_conn.cdn_port))
    connects.clear()
    with pytest.raises(LumaError, match=match) as raised:
        LumaHook().download_video(video, tmp_path / "clip.mp4")
    assert "hunter2" not in str(raised.value)
    assert connects == []


def test_only_the_listed_video_hosts_are_fetched_from(simulator, monkeypatch, tmp_path, connects, resolver):
    resolver({"cdn.example.com": "127.0.0.1", "a.videos.example.com": "127.0.0.1", "other.test": "127.0.0.1"})
    video = completed_video_on(simulator, monkeypatch)
    extra = {"video_hosts": ["cdn.example.com", "*.videos.example.com"]}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, **extra))
    path = f":{simulator.cdn_port}/videos/{video['id']}.mp4"
    for host in ("cdn.example.com", "a.videos.example.com"):
        written = LumaHook().download_video(at(video, f"http://{host}{path}"), tmp_path / "c.mp4")
        assert written.read_bytes() == SAMPLE
    connects.clear()
    for host in ("other.test", "127.0.0.1", "videos.example.com.evil.test"):
        with pytest.raises(LumaError, match="not in the connection's extra video_hosts"):
            LumaHook().download_video(at(video, f"http://{host}{path}"), tmp_path / "c.mp4")
    assert connects == []


def test_a_bad_video_hosts_extra_names_itself(simulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, video_hosts=["https://cdn/x"]))
    with pytest.raises(LumaError, match="Extra 'video_hosts'"):
        LumaHook().settings  # noqa: B018


# -- a loopback server of our own: redirects, chunked bodies, TLS -------------------------------------


class Origin:
    """A loopback HTTP(S) server answering each path with a scripted function of the request handler."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        self.hits: list[str] = []
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                origin.hits.append(path)
                origin.routes.get(path, lambda h: h.send_error(404))(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        self.routes[path] = answer

    def stream(self, path: str, status: int, head: bytes, filler: bytes, total: int, length: int | None = None):
        """Answer ``status`` with ``head`` then ``filler`` repeated up to ``total`` bytes, without holding it all."""

        def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            if length is not None:
                handler.send_header("Content-Length", str(length))
            handler.send_header("Connection", "close")  # no length: the body ends when the connection does
            handler.end_headers()
            try:
                handler.wfile.write(head)
                sent = len(head)
                while sent < total:
                    handler.wfile.write(filler)
                    sent += len(filler)
            except OSError:
                pass  # the client stopped reading: as it should

        self.routes[path] = answer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


def test_each_redirect_hop_is_checked_before_it_is_followed(luma_conn, origin, tmp_path, connects):
    video = completed_video(luma_conn)
    origin.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
    connects.clear()
    with pytest.raises(LumaError, match="link-local"):
        LumaHook().download_video(at(video, origin.url("/to-metadata")), tmp_path / "clip.mp4")
    assert connects == [("127.0.0.1", origin.port)]  # the redirect was read, its target never reached
    assert files_under(tmp_path) == []


def test_redirects_are_followed_to_the_video(luma_conn, origin, tmp_path):
    video = completed_video(luma_conn)
    origin.redirect("/a", "/b", 301)
    origin.redirect("/b", video["video_url"], 307)
    written = LumaHook().download_video(at(video, origin.url("/a")), tmp_path / "clip.mp4")
    assert written.read_bytes() == SAMPLE
    assert origin.hits == ["/a", "/b"]


def test_at_most_five_redirects(luma_conn, origin, tmp_path):
    video = completed_video(luma_conn)
    for hop in range(6):
        origin.redirect(f"/{hop}", f"/{hop + 1}")
    origin.redirect("/6", video["video_url"])
    with pytest.raises(LumaError, match="redirected more than 5 times"):
        LumaHook().download_video(at(video, origin.url("/0")), tmp_path / "clip.mp4", max_retries=2)
    assert origin.hits == ["/0", "/1", "/2", "/3", "/4", "/5"]  # refused, not retried
    assert luma_conn.count("video") == 0


def test_behind_a_proxy_the_url_is_checked_and_the_proxy_resolves(luma_conn, tmp_path, connects, resolver, monkeypatch):
    calls = resolver({"cdn.test": "127.0.0.1"})
    video = completed_video(luma_conn)  # before the proxy: the API calls are not under test here
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    proxy_port = closed.getsockname()[1]  # bound, never listening: the proxy refuses the connection
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        connects.clear()
        with pytest.raises(LumaError, match="link-local"):  # a literal address is still judged
            LumaHook().download_video(at(video, "https://169.254.169.254/"), tmp_path / "c.mp4")
        assert connects == []
        with pytest.raises(LumaError, match="dropped the connection"):  # the name goes to the proxy
            LumaHook().download_video(at(video, "https://cdn.test/v.mp4"), tmp_path / "c.mp4", max_retries=0)
        assert calls == []
        assert connects == [("127.0.0.1", proxy_port)]
    finally:
        closed.close()


def _tls_for(hostname: str, folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for ``hostname``, and the certificate's file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


def test_https_to_the_checked_address_still_verifies_the_host_name(luma_conn, tmp_path, resolver, monkeypatch):
    context, cert_file = _tls_for("cdn.test", tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_file))
    server = Origin(tls=context)
    try:
        server.stream("/v.mp4", 200, SAMPLE, b"", len(SAMPLE), length=len(SAMPLE))
        resolver({"cdn.test": "127.0.0.1", "wrong.test": "127.0.0.1"})
        video = completed_video(luma_conn)
        out = tmp_path / "out"
        written = LumaHook().download_video(at(video, server.url("/v.mp4", "cdn.test", "https")), out)
        assert written.read_bytes() == SAMPLE
        with pytest.raises(LumaError, match="SSLError"):  # the certificate names cdn.test, not wrong.test
            LumaHook().download_video(at(video, server.url("/v.mp4", "wrong.test", "https")), out, max_retries=0)
    finally:
        server.close()


# -- 3. size limits ------------------------------------------------------------------------------------


def test_a_huge_api_answer_is_refused_naming_its_size(luma_conn):
    (generation_id,) = [LumaHook().create_generation("a fox").id]
    luma_conn.inject_fault("huge", endpoint="get", times=10)
    with pytest.raises(LumaResponseError, match=r"with \d+ bytes by its Content-Length, above the 4 MiB"):
        LumaHook().get_generation(generation_id)
    with pytest.raises(LumaResponseError, match="above the 4 MiB"):
        asyncio.run(LumaHook().aget_generation(generation_id))


@pytest.fixture
def api_origin(origin: Origin, monkeypatch: pytest.MonkeyPatch) -> Origin:
    conn = {"conn_type": "luma", "host": f"http://127.0.0.1:{origin.port}", "password": SENTINEL_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", json.dumps({**conn, "extra": {"max_retries": 0}}))
    return origin


def peak_memory(call: Callable[[], Any]) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    try:
        call()
        error = None
    except BaseException as failure:  # returned to the test
        error = failure
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, error


@pytest.mark.parametrize("path", ["sync", "async"])
@pytest.mark.parametrize(
    ("status", "head", "error_class", "text", "most"),
    [
        # a success above the cap fails, naming the size; an error page is cut quietly to 64 KiB
        (200, b'{"id": "g", "padding": "', LumaResponseError, "more than 4194304 bytes, above the 4 MiB", 16),
        (502, b'{"message": "gateway says ', LumaServerError, "(502", 8),
    ],
    ids=["answer", "error page"],
)
def test_a_body_without_a_length_is_read_up_to_its_cap_only(api_origin, path, status, head, error_class, text, most):
    api_origin.stream("/v2/generate/video/luma-ai/generation", status, head, b"x" * 65536, 40 * MIB)
    hook = LumaHook()
    call = (lambda: hook.get_generation("g")) if path == "sync" else (lambda: asyncio.run(hook.aget_generation("g")))
    peak, error = peak_memory(call)
    assert isinstance(error, error_class), error
    assert text in str(error)
    assert peak < most * MIB  # read to the cap, not to the end of 40 MiB


def test_a_video_above_max_video_bytes_fails_before_its_body(simulator, monkeypatch, tmp_path):
    video = completed_video_on(simulator, monkeypatch)
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, max_video_bytes=1000))
    with pytest.raises(LumaError, match=rf"sent {len(SAMPLE)} bytes by its Content-Length.*max_video_bytes \(1000\)"):
        LumaHook().download_video(video, tmp_path / "clip.mp4", max_retries=3)
    assert simulator.count("video") == 1  # not retried: it will be as large next time
    assert files_under(tmp_path) == []


def test_a_video_without_a_length_stops_at_max_video_bytes(luma_conn, origin, tmp_path, monkeypatch):
    video = completed_video(luma_conn)
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(luma_conn, max_video_bytes=5 * MIB))
    origin.stream("/big.mp4", 200, SAMPLE[:32], b"\0" * 65536, 64 * MIB)
    with pytest.raises(LumaError, match=r"more than 5242880 bytes.*max_video_bytes"):
        LumaHook().download_video(at(video, origin.url("/big.mp4")), tmp_path / "clip.mp4")
    assert files_under(tmp_path) == []
    assert origin.hits == ["/big.mp4"]


def test_a_video_error_page_is_cut_quietly(luma_conn, origin, tmp_path):
    video = completed_video(luma_conn)
    origin.stream("/gone.mp4", 404, b"<html>", b"z" * 65536, 40 * MIB)
    peak, error = peak_memory(
        lambda: LumaHook().download_video(at(video, origin.url("/gone.mp4")), tmp_path / "clip.mp4")
    )
    assert isinstance(error, LumaError), error
    assert "link may have expired" in str(error)
    assert peak < 8 * MIB


def test_a_tiny_video_body_fails_the_mp4_check(luma_conn, tmp_path):
    video = completed_video(luma_conn)
    luma_conn.inject_fault("tiny_video", endpoint="video", times=2)
    with pytest.raises(LumaResponseError, match="not an MP4"):
        LumaHook().download_video(video, tmp_path / "clip.mp4", max_retries=1)
    assert files_under(tmp_path) == []
    luma_conn.inject_fault("tiny_video", endpoint="video", times=1)
    assert LumaHook().download_video(video, tmp_path / "clip.mp4", max_retries=1).read_bytes() == SAMPLE


def test_a_bad_max_video_bytes_names_itself(simulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LUMA_DEFAULT", connection_json(simulator, max_video_bytes=0))
    with pytest.raises(LumaError, match=r"Extra 'max_video_bytes'.*at least 1"):
        LumaHook().settings  # noqa: B018


def test_the_simulator_video_still_downloads_through_every_path(luma_conn, tmp_path):
    # The simulator's video origin is plain http on loopback, and its API is on loopback: allowed.
    video = completed_video(luma_conn)
    assert LumaHook().download_video(video["id"], tmp_path / "by-id.mp4").read_bytes() == SAMPLE
