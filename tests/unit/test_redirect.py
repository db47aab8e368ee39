"""The plain-HTTP port of server.tls.redirect_port: where each head is sent, and what it reads."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from broadcaster.web.redirect import MAX_HEAD_BYTES, RedirectConnection, answer, location


def test_the_same_host_and_path_over_https() -> None:
    head = b"GET /channels/xa-an-binh.ogg?x=1 HTTP/1.1\r\nHost: radio.xa-an-binh.vn\r\nUser-Agent: x"
    assert location(head, 443, "0.0.0.0") == "https://radio.xa-an-binh.vn/channels/xa-an-binh.ogg?x=1"
    assert location(b"GET / HTTP/1.1\r\nHost: 10.0.0.5:80", 8443, "0.0.0.0") == "https://10.0.0.5:8443/"
    assert location(b"GET /a HTTP/1.1\r\nHost: [::1]:80", 443, "::") == "https://[::1]/a"
    assert location(b"GET /a HTTP/1.1\r\nHost: [::1]", 443, "::") == "https://[::1]/a"


def test_a_forged_host_or_path_cannot_shape_the_reply() -> None:
    for host in (b"evil.example/\r\nSet-Cookie: x=1", b"a b", b"<script>", b"x@evil.example", b""):
        head = b"GET /ok HTTP/1.1\r\nHost: " + host
        assert location(head, 443, "radio.local").startswith("https://radio.local/")
    assert location(b"GET http://evil.example/ HTTP/1.1\r\nHost: radio.local", 443, "h") == "https://radio.local/"
    assert location(b"GARBAGE", 443, "radio.local") == "https://radio.local/"
    reply = answer(b"GET /\x7f\x00 HTTP/1.1\r\nHost: radio.local", 443, "h")
    assert reply.startswith(b"HTTP/1.1 301 ") and b"Location: https://radio.local/\r\n" in reply


def test_it_answers_once_and_reads_no_body() -> None:
    connection, transport = RedirectConnection(8443, "127.0.0.1"), StringTransport()
    connection.makeConnection(transport)
    connection.dataReceived(b"POST /api/v1/media HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 99999999\r\n\r\n")
    connection.dataReceived(b"x" * 100_000)  # the body is never kept
    assert transport.value().startswith(b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://127.0.0.1:8443/api/v1/media")
    assert transport.disconnecting and connection.buffer is None


def test_a_head_that_never_ends_is_cut_off() -> None:
    connection, transport = RedirectConnection(443, "h"), StringTransport()
    connection.makeConnection(transport)
    connection.dataReceived(b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * MAX_HEAD_BYTES)
    assert transport.value() == b"" and transport.disconnecting
