"""``server.tls.redirect_port``: a plain-HTTP port that sends every request to the HTTPS one.

A browser typing the commune radio's name reaches port 80 first. This port answers one thing, a
``301`` to the same host and path over HTTPS, and reads nothing else: no body is stored, a head is
at most MAX_HEAD_BYTES and must come within HEAD_TIMEOUT_S, and the connection closes after the
answer. The host sent back is the request's own (as a proxy's ``return 301 https://$host``), kept
only if it is a plain host name or address; anything else becomes the configured host, so a
forged header cannot put markup or a second header into the reply.
"""

from __future__ import annotations

import re

from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin

from broadcaster import metrics

MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT_S = 10.0
HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.?)*|\[[0-9A-Fa-f:.]+\])$")
PATH = re.compile(r"^/[\x21-\x7e]*$")  # printable, no spaces: as a request line carries it


def location(head: bytes, https_port: int, fallback_host: str) -> str:
    """Where a request's head goes over HTTPS."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    path = parts[1] if len(parts) == 3 and PATH.fullmatch(parts[1]) else "/"
    host = fallback_host
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "host":
            value = value.strip()
            name_only = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
            if name_only.startswith("[") and "]:" in name_only:
                name_only = name_only.rsplit(":", 1)[0]
            if HOST.fullmatch(name_only):
                host = name_only
            break
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{host}{port}{path}"


def answer(head: bytes, https_port: int, fallback_host: str) -> bytes:
    target = location(head, https_port, fallback_host)
    body = f"Moved to {target}\n".encode("ascii")
    return (f"HTTP/1.1 301 Moved Permanently\r\nLocation: {target}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("ascii") + body


class RedirectConnection(Protocol, TimeoutMixin):
    def __init__(self, https_port: int, fallback_host: str) -> None:
        self.https_port, self.fallback_host = https_port, fallback_host
        self.buffer = b""

    def connectionMade(self) -> None:  # noqa: N802
        self.setTimeout(HEAD_TIMEOUT_S)

    def timeoutConnection(self) -> None:  # noqa: N802
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.buffer is None:
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                metrics.connections_refused_total.labels("redirect_head").inc()
                self.transport.abortConnection()  # type: ignore[union-attr]
            return
        head, self.buffer = self.buffer[:end], None  # type: ignore[assignment]
        self.setTimeout(None)
        metrics.http_requests_total.labels("redirect", "301").inc()
        self.transport.write(answer(head, self.https_port, self.fallback_host))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class RedirectFactory(Factory):
    def __init__(self, https_port: int, fallback_host: str) -> None:
        self.https_port, self.fallback_host = https_port, fallback_host

    def buildProtocol(self, addr: object) -> RedirectConnection:  # noqa: N802
        return RedirectConnection(self.https_port, self.fallback_host)
