"""The webcast connection (protocols/webcast.py) and the Sniffer's routing (protocols/sniffer.py), on a
StringTransport with a fake desk: the hello, refusals as close codes, bounds, pings, metadata."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from broadcaster import metrics
from broadcaster.protocols import websocket as ws
from broadcaster.protocols.ingest import IngestConnection, Refusal, SourceRequest
from broadcaster.protocols.sniffer import Sniffer
from broadcaster.protocols.webcast import (
    HELLO_TIMEOUT_S,
    MAX_EARLY_BYTES,
    WebcastConnection,
    close_code,
    parse_hello,
    parse_metadata,
)

MASK = b"\x01\x02\x03\x04"


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return ws.encode_frame(opcode, payload, fin=fin, mask=MASK)


def text(value: Any) -> bytes:
    return frame(ws.OP_TEXT, json.dumps(value).encode())


def hello(password: str = "pw", user: str | None = "op-a", mime: str = "audio/webm;codecs=opus") -> bytes:
    data = {"mime": mime, "password": password, **({"user": user} if user is not None else {})}
    return text({"type": "hello", "data": data})


def upgrade(path: str = "/ingest/ch-a", protocol: str = "webcast", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n{extra}\r\n").encode()


class Session:
    idle_timeout_s = 30.0

    def __init__(self) -> None:
        self.fed: list[bytes] = []
        self.closed: bool | None = None
        self.connection: Any = None
        self.refuse_next = False

    def attach(self, connection: Any) -> None:
        self.connection = connection

    def feed(self, data: bytes) -> None:
        if self.refuse_next:
            raise Refusal(415, "unsupported_format", "not audio")
        self.fed.append(data)

    def close(self, clean: bool) -> None:
        self.closed = clean


class Desk:
    def __init__(self, outcome: Any = None) -> None:
        self.requests: list[tuple[SourceRequest, tuple[str, str] | None]] = []
        self.outcome = outcome
        self.session = Session()
        self.titles: list[tuple[str, str]] = []
        self.pending: Deferred[Any] | None = None

    def is_mount(self, path: str) -> bool:
        return path.startswith("/ingest/") or path == "/ch-a.ogg"

    def open(self, request: SourceRequest, credentials: tuple[str, str] | None = None) -> Any:
        self.requests.append((request, credentials))
        if isinstance(self.outcome, Refusal):
            raise self.outcome
        if self.outcome == "defer":
            self.pending = Deferred()
            return self.pending
        if self.outcome == "fail":
            return fail(Refusal(401, "unauthenticated", "wrong user name or password"))
        return self.session

    def retitle(self, session: Any, title: str, artist: str) -> None:
        self.titles.append((title, artist))


def connect(desk: Desk, clock: Clock | None = None) -> tuple[WebcastConnection, StringTransport]:
    connection = WebcastConnection(desk, clock=(clock or Clock()).seconds)
    if clock is not None:
        connection.callLater = clock.callLater  # type: ignore[method-assign]
    transport = StringTransport(peerAddress=None)
    connection.makeConnection(transport)
    return connection, transport


def closes(transport: StringTransport) -> list[ws.Close]:
    """The close frames the server wrote (after its 101)."""
    data = transport.value()
    if data.startswith(b"HTTP/1.1 101"):
        data = data[data.index(b"\r\n\r\n") + 4:]
    return [e for e in ws.FrameReader(require_mask=False).feed(data) if isinstance(e, ws.Close)]


def counted(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value("broadcaster_webcast_rejected_total", {"reason": reason})
    return value or 0.0


def test_parse_hello_and_metadata() -> None:
    assert parse_hello('{"type":"hello","data":{"mime":"audio/webm","user":"u","password":"p"}}').user == "u"
    anonymous = parse_hello('{"type":"hello","data":{"mime":"audio/webm","password":"p"}}')
    assert (anonymous.user, anonymous.password) == ("source", "p")  # Icecast's default source user
    for bad in ('[]', '{"type":"metadata","data":{}}', '{"type":"hello"}', '{"type":"hello","data":{}}',
                '{"type":"hello","data":{"mime":5}}', 'not json',
                '{"type":"hello","data":{"mime":"' + "x" * 2000 + '"}}'):
        with pytest.raises(ws.WebSocketError) as error:
            parse_hello(bad)
        assert error.value.code == 1002
    assert parse_metadata('{"type":"metadata","data":{"title":"Bản tin","artist":"UBND"}}') == ("Bản tin", "UBND")
    assert parse_metadata('{"type":"metadata","data":{"song":"a"}}') == ("a", "")
    assert parse_metadata('{"type":"whatever"}') is None
    assert close_code(Refusal(401, "x", "y")) == 4401 and close_code(Refusal(500, "x", "y")) == 1011
    assert close_code(Refusal(507, "x", "y")) == 4507


def test_upgrade_hello_audio_metadata_close() -> None:
    desk = Desk()
    connection, transport = connect(desk)
    connection.dataReceived(upgrade())
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Protocol: webcast\r\n" in transport.value()
    connection.dataReceived(hello() + frame(ws.OP_BINARY, b"\x1a\x45\xdf\xa3chunk-1")
                            + text({"type": "metadata", "data": {"title": "T", "artist": "A"}})
                            + frame(ws.OP_BINARY, b"chunk", fin=False) + frame(ws.OP_CONTINUATION, b"-2"))
    request, credentials = desk.requests[0]
    assert credentials == ("op-a", "pw")
    assert request.headers["content-type"] == "audio/webm;codecs=opus" and request.path == "/ingest/ch-a"
    assert desk.session.fed == [b"\x1a\x45\xdf\xa3chunk-1", b"chunk-2"]
    assert desk.titles == [("T", "A")]
    connection.dataReceived(frame(ws.OP_CLOSE, (1000).to_bytes(2, "big")))
    assert closes(transport) == [ws.Close(1000, "")]
    assert transport.disconnecting
    connection.connectionLost()
    assert desk.session.closed is True


def test_audio_while_the_password_is_checked_is_kept_in_order() -> None:
    desk = Desk("defer")
    connection, transport = connect(desk)
    connection.dataReceived(upgrade() + hello() + frame(ws.OP_BINARY, b"a")
                            + text({"type": "metadata", "data": {"title": "early"}}) + frame(ws.OP_BINARY, b"b"))
    assert desk.session.fed == []
    assert desk.pending is not None
    desk.pending.callback(desk.session)
    connection.dataReceived(frame(ws.OP_BINARY, b"c"))
    assert desk.session.fed == [b"a", b"b", b"c"] and desk.titles == [("early", "")]


def test_too_much_audio_before_the_decision_is_refused() -> None:
    """Held audio and a message still arriving together never pass MAX_EARLY_BYTES: the message that
    would is refused from its header (1009), before its bytes are read."""
    desk = Desk("defer")
    connection, transport = connect(desk)
    before = counted("too_big")
    connection.dataReceived(upgrade() + hello())
    chunk = frame(ws.OP_BINARY, bytes(64 * 1024))
    for _ in range(MAX_EARLY_BYTES // (64 * 1024) + 1):
        connection.dataReceived(chunk)
    assert connection._early_bytes == MAX_EARLY_BYTES, "the bound is reached, never passed"
    assert [c.code for c in closes(transport)] == [1009]
    assert counted("too_big") == before + 1


def test_a_big_message_before_the_decision_is_refused_from_its_header() -> None:
    desk = Desk("defer")
    connection, transport = connect(desk)
    connection.dataReceived(upgrade() + hello())
    before = counted("too_big")
    big = frame(ws.OP_BINARY, bytes(1 << 20))  # MAX_MESSAGE_BYTES: what an accepted studio may send
    connection.dataReceived(big[:64 * 1024])  # its header and a first piece: refused before the rest comes
    assert [c.code for c in closes(transport)] == [1009] and counted("too_big") == before + 1
    assert len(connection.reader._buffer) <= 64 * 1024 and connection._early_bytes == 0
    connection.dataReceived(big[64 * 1024:])  # the rest is not read, let alone held
    assert len(connection.reader._buffer) <= 64 * 1024


def test_an_accepted_session_takes_messages_bigger_than_the_early_bound() -> None:
    desk = Desk("defer")
    connection, transport = connect(desk)
    connection.dataReceived(upgrade() + hello())
    assert desk.pending is not None
    desk.pending.callback(desk.session)
    chunk = bytes(MAX_EARLY_BYTES + 1)
    connection.dataReceived(frame(ws.OP_BINARY, chunk))
    assert desk.session.fed == [chunk] and closes(transport) == []


@pytest.mark.parametrize("refusal, code", [(Refusal(401, "unauthenticated", "wrong user name or password"), 4401),
                                           (Refusal(403, "forbidden", "not your zone"), 4403),
                                           (Refusal(409, "already_live", "ch-a is already live"), 4409),
                                           (Refusal(415, "unsupported_format", "audio/wav"), 4415),
                                           (Refusal(429, "too_many_failures", "wait"), 4429)])
def test_refusals_close_with_4000_plus_the_status(refusal: Refusal, code: int) -> None:
    desk = Desk(refusal)
    connection, transport = connect(desk)
    connection.dataReceived(upgrade() + hello())
    assert closes(transport) == [ws.Close(code, refusal.message)]
    assert transport.disconnecting


def test_a_failed_deferred_decision_closes_too() -> None:
    connection, transport = connect(Desk("fail"))
    connection.dataReceived(upgrade() + hello(password="nope"))
    assert [c.code for c in closes(transport)] == [4401]


def test_unplayable_audio_ends_the_session_with_4415() -> None:
    desk = Desk()
    connection, transport = connect(desk)
    connection.dataReceived(upgrade() + hello())
    desk.session.refuse_next = True
    connection.dataReceived(frame(ws.OP_BINARY, b"RIFF...."))
    assert [c.code for c in closes(transport)] == [4415] and desk.session.closed is False


@pytest.mark.parametrize("first, reason", [(frame(ws.OP_BINARY, b"audio first"), "bad_hello"),
                                           (text({"type": "metadata", "data": {}}), "bad_hello"),
                                           (frame(ws.OP_TEXT, b"{" * 17000), "too_big"),  # hello > 16 KiB
                                           (ws.encode_frame(ws.OP_TEXT, b"{}"), "unmasked")])
def test_bad_first_messages_close_and_are_counted(first: bytes, reason: str) -> None:
    desk = Desk()
    connection, transport = connect(desk)
    before = counted(reason)
    connection.dataReceived(upgrade() + first)
    assert len(closes(transport)) == 1 and closes(transport)[0].code in (1002, 1009)
    assert counted(reason) == before + 1
    assert desk.requests == []  # nothing unauthenticated reached the password check


def test_no_hello_in_time_closes_then_aborts() -> None:
    clock = Clock()
    connection, transport = connect(Desk(), clock)
    connection.dataReceived(upgrade())
    clock.advance(HELLO_TIMEOUT_S + 0.1)
    assert [c.code for c in closes(transport)] == [1008]
    clock.advance(10)
    assert transport.disconnecting


def test_pings_are_answered_within_a_bound_and_bad_text_after_hello_is_ignored() -> None:
    desk = Desk()
    connection, transport = connect(desk, Clock())
    connection.dataReceived(upgrade() + hello())
    start = len(transport.value())
    connection.dataReceived(frame(ws.OP_PING, b"hi") * 50)
    pongs = ws.FrameReader(require_mask=False).feed(transport.value()[start:])
    assert pongs and all(p == ws.Pong(b"hi") for p in pongs) and len(pongs) <= 10
    before = counted("ignored_bad_message")
    connection.dataReceived(frame(ws.OP_TEXT, b"not json"))
    assert counted("ignored_bad_message") == before + 1 and not transport.disconnecting


@pytest.mark.parametrize("request_bytes, status", [
    (upgrade(protocol="chat"), b"400"),
    (upgrade().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), b"426"),
])
def test_bad_handshakes_get_an_http_error(request_bytes: bytes, status: bytes) -> None:
    connection, transport = connect(Desk())
    connection.dataReceived(request_bytes)
    assert transport.value().split(b" ")[1] == status and transport.disconnecting


def test_the_desk_hanging_up_sends_going_away() -> None:
    desk = Desk()
    connection, transport = connect(desk)
    connection.dataReceived(upgrade() + hello())
    desk.session.connection.hang_up()
    assert [c.code for c in closes(transport)] == [1001] and desk.session.closed is False


class Web:
    def __init__(self) -> None:
        self.protocols: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802
        from twisted.internet.protocol import Protocol

        class Recorder(Protocol):
            def __init__(self) -> None:
                self.data = b""

            def dataReceived(self, data: bytes) -> None:  # noqa: N802
                self.data += data

        self.protocols.append(Recorder())
        return self.protocols[-1]


@pytest.mark.parametrize("head, where", [
    (upgrade(), "webcast"),
    (upgrade("/ch-a.ogg"), "webcast"),
    (upgrade("/healthz"), "web"),  # not a mount: twisted.web answers it
    (b"GET /ingest/ch-a HTTP/1.1\r\nHost: x\r\n\r\n", "web"),  # no upgrade: an ordinary GET
    (b"GET /ch-a.ogg HTTP/1.1\r\nUpgrade: h2c\r\n\r\n", "web"),
    (b"PUT /ingest/ch-a HTTP/1.1\r\n\r\n", "ingest"),
    (b"PUT /api/v1/x HTTP/1.1\r\n\r\n", "web"),
])
def test_sniffer_routes_by_method_path_and_upgrade(head: bytes, where: str) -> None:
    web, desk = Web(), Desk()
    sniffer = Sniffer(web, desk, webcast=desk)  # type: ignore[arg-type]
    sniffer.makeConnection(StringTransport())
    for i in range(0, len(head), 5):  # trickled: the head is held until it is whole
        sniffer.dataReceived(head[i:i + 5])
    kind = {WebcastConnection: "webcast", IngestConnection: "ingest"}.get(type(sniffer.delegate), "web")
    assert kind == where
    if where == "web":
        assert web.protocols[0].data == head  # every byte handed on, untouched


def test_sniffer_hands_an_oversized_get_head_to_the_web() -> None:
    web, desk = Web(), Desk()
    sniffer = Sniffer(web, desk, webcast=desk)  # type: ignore[arg-type]
    sniffer.makeConnection(StringTransport())
    sniffer.dataReceived(b"GET /ingest/ch-a HTTP/1.1\r\nUpgrade: websocket\r\nX: " + b"a" * 17000)
    assert web.protocols and web.protocols[0].data.startswith(b"GET /ingest/ch-a")


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=st.lists(st.one_of(
    st.binary(max_size=200).map(lambda b: frame(ws.OP_BINARY, b)),
    st.text(max_size=80).map(lambda t: frame(ws.OP_TEXT, t.encode())),
    st.dictionaries(st.sampled_from(["type", "data", "mime", "user", "password", "title"]),
                    st.one_of(st.text(max_size=10), st.integers(), st.none(),
                              st.dictionaries(st.sampled_from(["mime", "user", "password", "title", "artist"]),
                                              st.one_of(st.text(max_size=10), st.integers(), st.none()))),
                    max_size=3).map(text),
    st.binary(max_size=40)), max_size=6), accept=st.booleans())
def test_fuzz_the_connection_never_raises(messages: list[bytes], accept: bool) -> None:
    desk = Desk(None if accept else Refusal(401, "unauthenticated", "no"))
    connection, transport = connect(desk)
    connection.dataReceived(upgrade())
    for data in messages:
        connection.dataReceived(data)  # a protocol error closes; nothing escapes
    connection.connectionLost()
    assert len(closes(transport)) <= 1


def test_a_protocol_error_mid_session_ends_it_as_failed() -> None:
    desk = Desk()
    connection, transport = connect(desk)
    connection.dataReceived(upgrade() + hello() + frame(ws.OP_BINARY, b"audio"))
    connection.dataReceived(bytes([0x83, 0x80]) + MASK)  # a reserved opcode
    assert [c.code for c in closes(transport)] == [1002]
    connection.connectionLost()  # our own clean TCP close
    assert desk.session.closed is False


def test_a_decision_that_does_not_come_in_time_closes_with_try_again_later() -> None:
    clock = Clock()
    desk = Desk("defer")
    connection, transport = connect(desk, clock)
    connection.dataReceived(upgrade() + hello())
    clock.advance(HELLO_TIMEOUT_S + 0.1)
    assert [c.code for c in closes(transport)] == [1013]
    assert desk.pending is not None
    desk.pending.callback(desk.session)  # the check ends after all: the session is closed at once
    assert desk.session.closed is False and desk.session.connection is None


def test_a_decision_failing_after_the_client_went_writes_nothing_and_arms_no_timer() -> None:
    clock = Clock()
    desk = Desk("defer")
    connection, transport = connect(desk, clock)
    connection.dataReceived(upgrade() + hello())
    connection.connectionLost()  # Twisted leaves .transport set after this
    assert clock.getDelayedCalls() == []
    written = transport.value()
    assert desk.pending is not None
    desk.pending.errback(Refusal(401, "unauthenticated", "wrong user name or password"))
    assert transport.value() == written and clock.getDelayedCalls() == []
