"""HTTP(S) for a relay, with the limits an upstream must not be able to break.

Blocking (it runs in the relay's own process, broadcaster/relay/worker.py),
with a deadline on every connect and read, a cap on redirects and on the
bytes of a playlist or segment, no compressed bodies (no decompression
bomb), and, unless ``allow_private``, no address that is not public: the
host is resolved once, every address it resolves to is checked, and the
connection goes to the checked address (a DNS answer that changes between
check and connect cannot point us at the LAN). Redirect targets are checked
the same way.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

USER_AGENT = "broadcaster-relay/0.1 (Icecast/HLS relay)"


class RelayRefused(Exception):
    """The upstream cannot be relayed as configured (private address, bad scheme, too many
    redirects, a body over its limit...): retrying soon will not help."""


class UpstreamError(Exception):
    """The upstream failed this time (refused, reset, timed out, 5xx): retry with backoff."""


@dataclass(frozen=True)
class Limits:
    allow_private: bool = False
    max_redirects: int = 5
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    max_playlist_bytes: int = 1 << 20
    max_segment_bytes: int = 16 << 20
    max_fetch_s: float = 60.0  # a playlist or segment trickled slower than this is refused (a slowloris)


# IPv6 prefixes that carry an IPv4 address a gateway forwards to (NAT64, 6to4): Python counts them
# as global, but 64:ff9b::10.0.0.1 reaches the LAN through a NAT64 gateway.
EMBEDDING = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"),
             ipaddress.ip_network("2002::/16"))


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if any(address in network for network in EMBEDDING):
            return False
    return True


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why url cannot be a relay's upstream, from the text alone (no DNS: the API answers at
    once; a name is resolved, and checked, when the relay plays), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "must not carry a user name or password (they would show in the log)"
    if port == 0:
        return "port 0 is not a port"
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return None
    if not allow_private and not is_public(address):
        return f"{address} is not a public address (relay.allow_private is false)"
    return None


def public_address(host: str, port: int, allow_private: bool) -> tuple[int, str]:
    """(address family, the address to connect to) for host, refusing non-public ones."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UpstreamError(f"cannot resolve {host!r}: {exc.strerror}") from None
    if not infos:
        raise UpstreamError(f"{host!r} resolves to no address")
    if not allow_private:
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not is_public(address):
                raise RelayRefused(f"{host!r} resolves to {address}, which is not a public address "
                                   "(relay.allow_private is false)")
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


class _IcyResponse(http.client.HTTPResponse):
    """Also takes Shoutcast v1's status line, ``ICY 200 OK``, as HTTP/1.0 (older MP3 stations)."""

    def _read_status(self) -> tuple[str, int, str]:
        line = str(self.fp.readline(65537), "iso-8859-1")
        if not line:
            raise http.client.RemoteDisconnected("the upstream closed the connection without a response")
        if line.startswith("ICY "):
            line = "HTTP/1.0 " + line[4:]
        version, _, rest = line.strip().partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit() or len(code) != 3:
            self._close_conn()  # type: ignore[attr-defined]  # CPython's own helper
            raise http.client.BadStatusLine(line[:80])
        return version, int(code), reason


class _Pinned(http.client.HTTPConnection):
    """Connects to the checked address while the Host header names the host."""

    response_class = _IcyResponse

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedTls(_Pinned):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, address, timeout)
        self.context = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


@dataclass
class Response:
    url: str  # after redirects
    content_type: str
    body: http.client.HTTPResponse
    connection: http.client.HTTPConnection

    def read_all(self, limit: int, what: str, deadline_s: float = 60.0) -> bytes:
        """The whole body, refused past ``limit`` bytes (a playlist that never ends) or past
        ``deadline_s`` (one trickled a byte at a time, each within the read timeout)."""
        length = self.body.getheader("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self.close()
            raise RelayRefused(f"{what} {self.url} is {int(length)} bytes, over the limit of {limit}")
        data = self._read(limit + 1, time.monotonic() + deadline_s)
        if data is None:
            self.close()
            raise UpstreamError(f"{what} {self.url} took longer than {deadline_s:g} s to arrive")
        if len(data) > limit:
            self.close()
            raise RelayRefused(f"{what} {self.url} is over the limit of {limit} bytes")
        self.close()
        return data

    def _read(self, limit: int, deadline: float) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        try:
            while size < limit:
                if time.monotonic() > deadline:
                    return None
                chunk = self.body.read1(min(65536, limit - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise UpstreamError(f"reading {self.url}: {exc}") from None
        return b"".join(chunks)

    def read_some(self) -> bytes:
        """What has arrived of an endless stream (b"" at its end)."""
        try:
            return self.body.read1(65536)
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamError(f"reading {self.url}: {exc}") from None

    def close(self) -> None:
        self.connection.close()


def get(url: str, limits: Limits) -> Response:
    """GET url, following at most ``max_redirects`` redirects, each target checked."""
    for _ in range(limits.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RelayRefused(f"{url[:200]!r} is not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        _, address = public_address(parts.hostname, port, limits.allow_private)
        kind = _PinnedTls if parts.scheme == "https" else _Pinned
        connection = kind(parts.hostname, port, address, limits.connect_timeout_s)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                                                     "Icy-MetaData": "0"})
            if connection.sock is not None:
                connection.sock.settimeout(limits.read_timeout_s)
            response = connection.getresponse()
        except ssl.SSLError as exc:
            connection.close()
            raise UpstreamError(f"TLS with {parts.hostname}: {exc.reason or exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise UpstreamError(f"{parts.hostname}:{port}: {exc or type(exc).__name__}") from None
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("location")
            connection.close()
            if not location:
                raise UpstreamError(f"{url}: redirect without a Location")
            url = urljoin(url, location)
            continue
        if response.status != 200:
            connection.close()
            raise UpstreamError(f"{url}: HTTP {response.status} {response.reason}")
        encoding = (response.getheader("content-encoding") or "identity").lower()
        if encoding not in ("identity", ""):
            connection.close()
            raise RelayRefused(f"{url}: sent a {encoding} body though we asked for none")
        return Response(url, (response.getheader("content-type") or "").split(";")[0].strip().lower(),
                        response, connection)
    raise RelayRefused(f"more than {limits.max_redirects} redirects from the relay's URL (last: {url[:200]})")
