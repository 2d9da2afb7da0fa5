"""
Which video URLs may be fetched, and at which address: the guard against server-side request forgery.

A ``video_url`` comes from an API answer, so it is not trusted: before any connection is made, its
host name is resolved (once, through a :data:`Resolver` that tests can replace), every address is
checked, and the download then connects to the checked address itself, so a second, different
answer of the name server (DNS rebinding) is never used. Each redirect hop is checked the same way.

The rules (:class:`VideoHostPolicy`):

* ``https`` only; plain ``http`` only to a loopback address, and only where loopback is allowed
  (the local simulator's video origin).
* Link-local addresses (``169.254.0.0/16``, ``fe80::/10``: the cloud metadata service), multicast,
  reserved and unspecified addresses are always refused.
* Loopback, private and other non-public addresses are refused unless the connection's own host
  is loopback (the simulator) or the extra ``allow_private_video_hosts`` is true.
* With the extra ``video_hosts`` (e.g. ``["cdn.example.com", "*.cdn.example.com"]``), only those
  host names are fetched from; the address rules still apply.
* A URL with a user name or password, a backslash, or control characters is refused.

When a proxy from the environment (``HTTPS_PROXY``/``HTTP_PROXY``, honouring ``NO_PROXY``) carries
the request, the proxy resolves the name and the address cannot be seen here: then the rules on the
URL (scheme, host names, the allow-list, and literal IP addresses) still apply, and the proxy is
trusted to keep requests away from internal addresses.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from airflow_provider_luma.errors import LumaConnectionError, LumaError
from airflow_provider_luma.hooks.settings import LumaSettings, is_loopback

#: Resolves a host name and port to IP address strings (``socket.getaddrinfo`` by default).
Resolver = Callable[[str, int], list[str]]
#: Most redirects one download follows.
MAX_REDIRECTS = 5

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class LumaVideoUrlRefusedError(LumaError):
    """A video URL (or a redirect) that the download refuses to fetch; never retried."""


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's name service gives ``host`` (a failure is an empty list)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


#: The resolver of every download that is given none: replace it (e.g. with ``monkeypatch``) in tests.
default_resolver: Resolver = system_resolver


@dataclass(frozen=True)
class Target:
    """
    One checked hop of a download.

    :param url: The URL as given (for messages and relative redirects).
    :param hostname: The host name (lower case), for SNI, the certificate and the ``Host`` header.
    :param port: The port.
    :param address: The checked address to connect to; ``None`` when a proxy resolves the name.
    """

    url: str
    hostname: str
    port: int
    address: str | None

    @property
    def pinned_url(self) -> str:
        """The URL with the checked address in place of the host name (the URL itself behind a proxy)."""
        if self.address is None:
            return self.url
        parts = urlsplit(self.url)
        host = f"[{self.address}]" if ":" in self.address else self.address
        return parts._replace(netloc=f"{host}:{self.port}").geturl()


@dataclass(frozen=True)
class VideoHostPolicy:
    """
    Where videos may be downloaded from (see the module's docstring for the rules).

    :param allow_local: Allow loopback, private and other non-public addresses (and http to loopback).
    :param allowed_hosts: Host names fetched from (``*.example.com`` also matches sub-domains); empty: any.
    :param resolver: Resolves a host name; the seam tests use to map a name to a loopback address.
    """

    allow_local: bool = False
    allowed_hosts: tuple[str, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def for_settings(cls, settings: LumaSettings, resolver: Resolver) -> VideoHostPolicy:
        """
        The policy of a connection: local addresses are allowed when its own host is loopback (the
        simulator) or its extra ``allow_private_video_hosts`` says so; ``video_hosts`` is the allow-list.

        :param settings: The connection's settings.
        :param resolver: Resolves host names.
        """
        own_host = urlsplit(settings.base_url).hostname or ""
        return cls(
            allow_local=settings.allow_private_video_hosts or is_loopback(own_host),
            allowed_hosts=settings.video_hosts,
            resolver=resolver,
        )

    def check(self, url: str, *, proxied: bool = False, what: str = "downloading the video") -> Target:
        """
        Check ``url`` before any connection; return where to connect.

        :param url: The URL to fetch.
        :param proxied: A proxy carries the request and resolves the name: only the URL is checked.
        :param what: What is being downloaded, for messages.
        :raises LumaVideoUrlRefusedError: The URL or one of its addresses breaks a rule.
        :raises LumaConnectionError: The host name does not resolve (transient).
        """
        parts = _split(url, what)
        hostname = (parts.hostname or "").rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._check_host_name(hostname, what)
        literal = _literal_address(hostname)
        if literal is not None:
            addresses = [literal]
        elif proxied:
            addresses = []
        else:
            addresses = [a for a in (_parse_address(text) for text in self.resolver(hostname, port)) if a]
            if not addresses:
                # Name service failures are often passing: retried like a connection never made.
                raise LumaConnectionError(
                    f"The video host {hostname!r} could not be resolved while {what}.", request_sent=False
                )
        for address in addresses:
            self._check_address(hostname, address, what)
        if not addresses and is_loopback(hostname) and not self.allow_local:  # "localhost" behind a proxy
            raise LumaVideoUrlRefusedError(f"Refused {what} from {hostname!r}: {_LOCAL_ADVICE}")
        if parts.scheme == "http":
            local = all(_unmapped(a).is_loopback for a in addresses) if addresses else is_loopback(hostname)
            if not (local and self.allow_local):
                raise LumaVideoUrlRefusedError(
                    f"Refused {what} from {hostname!r} over plain http: the video host must use https."
                )
        return Target(url, hostname.lower(), port, str(addresses[0]) if addresses and not proxied else None)

    def _check_host_name(self, hostname: str, what: str) -> None:
        if not self.allowed_hosts:
            return
        name = hostname.lower()
        for allowed in self.allowed_hosts:
            if name == allowed or (allowed.startswith("*.") and name.endswith(allowed[1:])):
                return
        raise LumaVideoUrlRefusedError(
            f"Refused {what} from {hostname!r}: it is not in the connection's extra video_hosts "
            f"({', '.join(self.allowed_hosts)})."
        )

    def _check_address(self, hostname: str, address: IPAddress, what: str) -> None:
        plain = _unmapped(address)
        named = f"{hostname!r}" if str(address) == hostname else f"{hostname!r} ({address})"
        if plain.is_link_local:
            raise LumaVideoUrlRefusedError(
                f"Refused {what} from {named}: a link-local address (where the cloud metadata service lives) "
                "is never fetched from."
            )
        if plain.is_multicast or plain.is_unspecified or (plain.is_reserved and not plain.is_loopback):
            raise LumaVideoUrlRefusedError(f"Refused {what} from {named}: not an address a video host can have.")
        if not plain.is_global and not self.allow_local:
            raise LumaVideoUrlRefusedError(f"Refused {what} from {named}: {_LOCAL_ADVICE}")


_LOCAL_ADVICE = (
    "a loopback or private address; if your video host really is inside your network, set the "
    "connection's extra allow_private_video_hosts to true."
)


def _split(url: str, what: str) -> SplitResult:
    if not isinstance(url, str) or any(ch == "\\" or ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        # urllib3 and urllib.parse split a backslash differently: refuse rather than guess the host.
        raise LumaVideoUrlRefusedError(f"Refused {what}: its URL holds a backslash, a space or a control character.")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise LumaVideoUrlRefusedError(f"Refused {what}: its URL has a malformed port.") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise LumaVideoUrlRefusedError(f"Refused {what}: its URL is not an https URL with a host.")
    if parts.username is not None or parts.password is not None:
        # Never echo the credentials: name the host only.
        raise LumaVideoUrlRefusedError(f"Refused {what} from {parts.hostname!r}: its URL carries a user name.")
    return parts


def _literal_address(hostname: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(hostname)
    except ValueError:
        return None


def _parse_address(text: str) -> IPAddress | None:
    # getaddrinfo may add an IPv6 zone ("fe80::1%eth0"): drop it, the address decides.
    return _literal_address(text.split("%", 1)[0])


def _unmapped(address: IPAddress) -> IPAddress:
    # "::ffff:169.254.169.254" reaches the IPv4 address: judge that one (Python < 3.13 does not).
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
