"""Limits at the door: a body is stored only up to its route's limit, decided from the
request line and headers before the first byte of the body, and not at all for an
API request without credentials (issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from broadcaster.web.site import BODY_BYTES
from tests.integration.memory import Server


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    return Server(tmp_path)


def send_head_and_some_body(server: Server, head: str, body_bytes: int) -> tuple[object, StringTransport]:
    """The request line, the headers and part of the body, as a slow client sends them;
    returns the request twisted.web is filling, and the connection."""
    site = server.site.site
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50001))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(head.encode() + b"\r\n\r\n")
    server.reactor.advance(0)  # an upload's token is looked up (the connection paused) before its body
    channel.dataReceived(b"x" * body_bytes)
    return channel._channel.requests[-1], transport  # the HTTP/1.1 channel behind the protocol switcher


def stored(request: object) -> int:
    content = request.content  # type: ignore[attr-defined]
    content.seek(0, 2)
    return int(content.tell())


def test_an_api_body_without_credentials_is_never_stored(server: Server) -> None:
    request, _ = send_head_and_some_body(
        server, "POST /api/v1/media?zone=commune-a&title=x HTTP/1.1\r\nHost: m\r\nContent-Length: 50000000",
        2_000_000)
    assert request.too_large and stored(request) == 0  # type: ignore[attr-defined]


def test_an_upload_with_credentials_is_stored_up_to_the_upload_limit(server: Server) -> None:
    token = server.tokens["admin"]
    request, _ = send_head_and_some_body(
        server, "POST /api/v1/media?zone=commune-a&title=x HTTP/1.1\r\nHost: m\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: 3000000", 2_000_000)
    assert not request.too_large and stored(request) == 2_000_000  # type: ignore[attr-defined]


def test_other_routes_keep_at_most_a_cap_document(server: Server) -> None:
    token = server.tokens["admin"]
    request, _ = send_head_and_some_body(
        server, f"POST /api/v1/zones HTTP/1.1\r\nHost: m\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Length: {BODY_BYTES + 10}", 200_000)
    assert request.too_large and stored(request) == 0  # type: ignore[attr-defined]
    request, _ = send_head_and_some_body(
        server, f"POST /api/v1/alerts/cap HTTP/1.1\r\nHost: m\r\nAuthorization: Bearer {token}\r\n"
                "Transfer-Encoding: chunked", 0)
    assert request.body_limit == BODY_BYTES  # type: ignore[attr-defined]


def test_without_credentials_the_answer_is_401_and_nothing_is_processed(server: Server) -> None:
    status, reply = server.http("POST", "/api/v1/media?zone=commune-a&title=x", raw=b"RIFF" + b"\0" * 300_000,
                                who=None)
    assert status == 401 and reply["error"]["code"] == "unauthenticated"
    status, page = server.http("GET", "/api/v1/media")
    assert page["total"] == 0


def connect(server: Server, host: str = "127.0.0.1") -> tuple[object, StringTransport] | None:
    protocol = server.site.buildProtocol(IPv4Address("TCP", host, 50002))
    if protocol is None:
        return None
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50002))
    protocol.makeConnection(transport)
    return protocol, transport


def test_a_silent_connection_is_dropped_after_the_head_deadline(server: Server) -> None:
    opened = connect(server)
    assert opened is not None
    _, transport = opened
    server.reactor.advance(9.0)
    assert not transport.disconnecting
    server.reactor.advance(1.5)
    assert transport.disconnecting, "a socket that never speaks must not hold the port"


def test_a_trickled_head_does_not_extend_the_deadline(server: Server) -> None:
    opened = connect(server)
    assert opened is not None
    protocol, transport = opened
    connected = server.reactor.seconds()
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x":  # one byte every 0.5 s: 15 s for this much
        protocol.dataReceived(bytes([byte]))  # type: ignore[attr-defined]
        server.reactor.advance(0.5)
        if transport.disconnecting:
            break
    assert transport.disconnecting and server.reactor.seconds() - connected <= 10.5


def test_a_whole_head_in_time_is_served(server: Server) -> None:
    opened = connect(server)
    assert opened is not None
    protocol, transport = opened
    protocol.dataReceived(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")  # type: ignore[attr-defined]
    server.reactor.advance(0)
    assert transport.value().startswith(b"HTTP/1.0 200")
    server.reactor.advance(20.0)  # the head deadline no longer applies to it


def test_one_address_cannot_take_the_port(server: Server) -> None:
    from broadcaster import metrics

    cap = server.config.http.max_connections_per_address
    before = metrics.REGISTRY.get_sample_value("broadcaster_connections_refused_total",
                                               {"reason": "per_address"}) or 0.0
    held = [connect(server, "10.9.9.9") for _ in range(cap)]
    assert all(c is not None for c in held)
    assert connect(server, "10.9.9.9") is None, "one more from the same address is refused"
    assert connect(server, "10.9.9.10") is not None, "another address still gets in"
    after = metrics.REGISTRY.get_sample_value("broadcaster_connections_refused_total", {"reason": "per_address"})
    assert after == before + 1
    protocol, transport = held[0]  # type: ignore[misc]
    protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
    assert connect(server, "10.9.9.9") is not None, "a closed connection frees its place"


def test_a_second_request_on_a_kept_alive_connection_has_its_own_head_deadline(server: Server) -> None:
    opened = connect(server)
    assert opened is not None
    protocol, transport = opened
    protocol.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[attr-defined]
    server.reactor.advance(0)
    assert transport.value().startswith(b"HTTP/1.1 200") and not transport.disconnecting
    server.reactor.advance(30.0)  # idle between requests: twisted.web's own idle timeout (60 s) applies
    assert not transport.disconnecting
    started = server.reactor.seconds()
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:  # a byte every 2 s
        protocol.dataReceived(bytes([byte]))  # type: ignore[attr-defined]
        server.reactor.advance(2.0)
        if transport.disconnecting:
            break
    assert transport.disconnecting, "a trickle resets twisted's idle timeout, not this deadline"
    assert server.reactor.seconds() - started <= 12.0


def test_a_trickled_body_is_cut_off_at_its_deadline(server: Server) -> None:
    opened = connect(server)
    assert opened is not None
    protocol, transport = opened
    token = server.tokens["admin"]
    protocol.dataReceived((f"POST /api/v1/zones HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"  # type: ignore[attr-defined]
                           "Content-Length: 1000\r\n\r\n{").encode())
    started = server.reactor.seconds()
    for _ in range(100):  # a byte every 1 s: 1,000 s for the body
        protocol.dataReceived(b" ")  # type: ignore[attr-defined]
        server.reactor.advance(1.0)
        if transport.disconnecting:
            break
    assert transport.disconnecting
    assert server.reactor.seconds() - started <= 31.0 + 1000 / 16384


def test_an_upload_with_an_invalid_token_stores_nothing_and_is_held_while_checked(server: Server) -> None:
    site = server.site.site
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50003))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST /api/v1/media?zone=commune-a&title=x HTTP/1.1\r\nHost: m\r\n"
                         b"Authorization: Bearer bct_forged\r\nContent-Length: 3000000\r\n\r\n" + b"x" * 50_000)
    assert transport.producerState == "paused", "no more is read until the token is checked"
    server.reactor.advance(0)
    assert transport.producerState == "producing"
    request = channel._channel.requests[-1]
    channel.dataReceived(b"x" * 1_000_000)
    assert request.too_large and stored(request) == 0, "an invalid token's upload is not stored"
    spool = server.config.storage.media_dir / ".incoming"
    assert list(spool.iterdir()) == [], "nor spooled"
    started = server.reactor.seconds()
    while not transport.disconnecting and server.reactor.seconds() - started < 100:
        server.reactor.advance(1.0)
    assert server.reactor.seconds() - started <= 31, "its 3 MB get the short deadline of a refused body"


def test_a_refused_body_gets_the_short_deadline_whatever_it_declares(server: Server) -> None:
    opened = connect(server)
    assert opened is not None
    protocol, transport = opened
    protocol.dataReceived(b"POST /api/v1/zones HTTP/1.1\r\nHost: x\r\n"  # type: ignore[attr-defined]
                          b"Content-Length: 999999999999999999\r\n\r\n")
    started = server.reactor.seconds()
    for _ in range(60):
        protocol.dataReceived(b"x")  # type: ignore[attr-defined]
        server.reactor.advance(1.0)
        if transport.disconnecting:
            break
    assert transport.disconnecting and server.reactor.seconds() - started <= 31


def test_a_console_upload_without_its_csrf_header_stores_nothing(server: Server) -> None:
    """The one CSRF check outside the router: an upload's body is vetted before it is stored, and a
    cookie alone (as another site's form would send it) does not pass."""
    import re

    server.app.storage.users.set_password_sync("op-a", "mat-khau-cua-op-a")
    status, session = server.http("POST", "/api/v1/session", {"name": "op-a", "password": "mat-khau-cua-op-a"},
                                  who=None, headers={"Content-Type": "application/json"})
    assert status == 200
    cookie = re.search(r"bc_session=([^;]+)", server.last_head).group(1)  # type: ignore[union-attr]
    spool = server.config.storage.media_dir / ".incoming"
    for csrf in (b"", b"X-CSRF-Token: forged\r\n"):
        channel = server.site.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50004))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"POST /api/v1/media?zone=commune-a&title=x HTTP/1.1\r\nHost: m\r\n"
                             b"Cookie: bc_session=" + cookie.encode() + b"\r\n" + csrf +
                             b"Content-Length: 3000000\r\n\r\n" + b"x" * 50_000)
        server.reactor.advance(0)
        request = channel._channel.requests[-1]
        channel.dataReceived(b"x" * 1_000_000)
        assert request.too_large and stored(request) == 0, csrf
        assert list(spool.iterdir()) == [], "nor spooled"
    # With its header the same upload is taken (and refused only for what it is: not audio).
    status, reply = server.http("POST", "/api/v1/media?zone=commune-a&title=x", raw=b"RIFF" + b"\0" * 300_000,
                                who=None, headers={"Cookie": f"bc_session={cookie}", "X-CSRF-Token": session["csrf"]})
    assert (status, reply["error"]["code"]) == (422, "undecodable")
