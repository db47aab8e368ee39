"""Limits at the door: a body is stored only up to its route's limit, decided from the
request line and headers before the first byte of the body, and not at all for an
API request without credentials (issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

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
