"""The HTTP side: channel list, streams, SDP, metrics and health on one port."""

from __future__ import annotations

import io
import json
import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ServerFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from broadcaster import metrics
from broadcaster.api import AdminApi
from broadcaster.api.session import COOKIE, cookie_secret, csrf_matches
from broadcaster.control.auth import Action, Forbidden, Principal, authorize
from broadcaster.control.logins import LoginGuard
from broadcaster.control.studio import StudioDesk
from broadcaster.protocols.listener import serve_stream
from broadcaster.protocols.sniffer import Sniffer
from broadcaster.web import icecast, streams
from broadcaster.web.admin import IcecastAdmin
from broadcaster.web.console import ConsoleFiles, ConsolePage
from broadcaster.web.sdp import channel_sdp

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.channels import ChannelView

log = logging.getLogger(__name__)
SESSION_COOKIE = COOKIE.encode("ascii")
CONNECTION_DONE = Failure(ConnectionDone())


def respond(request: Request, route: str, code: int, body: bytes | str | Any,
            content_type: str = "application/json") -> bytes:
    if isinstance(body, str):
        data = body.encode("utf-8")
    elif isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", content_type.encode("ascii"))
    metrics.http_requests_total.labels(route, str(code)).inc()
    return data


def error(request: Request, route: str, code: int, error_code: str, message: str) -> bytes:
    return respond(request, route, code, {"error": {"code": error_code, "message": message}})


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, server: BroadcastServer) -> None:
        super().__init__()
        self.app = server


class _Streams(_Leaf):
    def __init__(self, server: BroadcastServer, tokens: LoginGuard) -> None:
        """``tokens``: the API's invalid tokens per address (AdminApi.logins), which a private
        stream's session cookie counts against too."""
        super().__init__(server)
        self.tokens = tokens


class ChannelList(_Streams):
    def render_GET(self, request: Request) -> Any:  # noqa: N802
        parts = request.postpath or []
        if len(parts) == 3 and parts[1] == b"hls":  # /channels/{id}/hls/{file}
            return hls_file(self.app, request, parts[0].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace"))
        if request.postpath and request.postpath != [b""]:
            return channel_file(self.app, request, b"/".join(request.postpath).decode("utf-8", "replace"),
                                self.tokens)
        return respond(request, "channels", 200, [self.app.describe_channel(c) for c in self.app.channels.values()])

    render_HEAD = render_GET

    def render_OPTIONS(self, request: Request) -> bytes:  # noqa: N802
        return icecast.preflight(request)


class MountAlias(_Streams):
    """/{channel}.ogg, .mp3, .m3u8, .m3u and .pls at the root, as Icecast names its mounts."""

    def render_GET(self, request: Request) -> Any:  # noqa: N802
        return channel_file(self.app, request, (request.prepath or [b""])[-1].decode("utf-8", "replace"),
                            self.tokens)

    render_HEAD = render_GET

    def render_OPTIONS(self, request: Request) -> bytes:  # noqa: N802
        return icecast.preflight(request)


class IcecastStatus(_Leaf):
    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        icecast.cors(request)
        return respond(request, "status-json", 200, icecast.status(self.app, request))

    def render_OPTIONS(self, request: Request) -> bytes:  # noqa: N802
        return icecast.preflight(request)


STREAMS = ("ogg", "mp3", "m3u8", *icecast.PLAYLISTS)  # the mount names served at the root too


def channel_file(app: BroadcastServer, request: Request, name: str, tokens: LoginGuard) -> Any:
    """A channel's stream (.ogg, .mp3), playlists (.m3u8 for HLS, .m3u, .pls) or multicast session (.sdp)."""
    channel_id, _, extension = name.rpartition(".")
    channel = app.channels.get(channel_id)
    if channel is None or extension not in ("sdp", *STREAMS):
        return error(request, "channels", 404, "not_found", f"no channel stream {name!r}; see GET /channels")
    if not channel.ready:  # the core has not built it yet (just started, or just added)
        request.setHeader(b"Retry-After", b"1")
        return error(request, "channels", 503, "starting", f"channel {channel_id!r} is starting; retry in a second")
    if extension == "sdp":
        if channel.config.multicast is None:
            return error(request, "sdp", 404, "no_multicast",
                         f"channel {channel_id!r} has no multicast group configured")
        sdp = channel_sdp(channel.config, channel.ssrc, app.config.audio.frame_ms,
                          origin=app.config.server.host)
        return respond(request, "sdp", 200, sdp, "application/sdp")
    if not channel.config.public:
        if extension == "ogg" and cookie_secret(request) is not None:
            return private_stream(app, request, channel, tokens)
        return error(request, "stream", 403, "not_public",
                     f"channel {channel_id!r} is not open to public HTTP listening")
    icecast.cors(request)
    if extension in icecast.PLAYLISTS:
        return respond(request, "playlist", 200, icecast.playlist(channel, extension, icecast.base_url(request)),
                       icecast.PLAYLISTS[extension])
    if extension == "m3u8":
        return streams.hls_playlist(app, request, channel)
    if extension == "mp3":
        return streams.mp3_stream(app, request, channel)
    return ogg_stream(app, request, channel)


def ogg_stream(app: BroadcastServer, request: Request, channel: ChannelView) -> Any:
    full = streams.listeners_full(app, request, channel.id)
    if full is not None:
        return full
    metrics.http_requests_total.labels("stream", "200").inc()
    return serve_stream(request, channel, max_backlog_bytes=app.config.http.max_backlog_bytes,
                        on_drop=lambda reason: metrics.listeners_dropped_total.labels(channel.id, reason).inc())


def private_stream(app: BroadcastServer, request: Request, channel: ChannelView, tokens: LoginGuard) -> Any:
    """The Ogg stream of a channel closed to public listening, for a console user who may see its
    zone (the monitor page): the session cookie is looked up in the storage pool, as the API does;
    anyone else is refused as before (403 not_public). Only the session cookie: no bearer token,
    so the stream's URL in an <audio> element carries no secret. An unknown cookie is a failure
    against the API's limit per address (``tokens``); past it, 429 before any lookup, so a flood
    of guesses does not hold the one-thread tokens pool from everyone else."""
    refusal = f"channel {channel.id!r} is not open to public HTTP listening"
    address = getattr(request.getClientAddress(), "host", None) or ""
    if not tokens.allowed(address, app.reactor.seconds()):
        metrics.auth_limited_total.labels("stream").inc()
        wait = tokens.retry_after_s(address, app.reactor.seconds())
        request.setHeader(b"Retry-After", str(max(1, math.ceil(wait))).encode("ascii"))
        return error(request, "stream", 429, "too_many_failures",
                     f"too many invalid sessions or tokens from {address}; try again in {wait:.0f} s")

    def found(user: dict[str, Any] | None) -> None:
        if user is None:
            tokens.failed(address, app.reactor.seconds())
        if request.finished or request._disconnected:
            return
        body: Any
        allowed = (user is not None and user.get("session") and not user.get("expired")
                   and not user.get("must_change_password"))  # as the API: nothing before the new password
        if allowed:
            try:
                authorize(Principal.from_row(user), Action.READ, [channel.config.zone], app.zones)  # type: ignore[arg-type]
            except Forbidden:
                allowed = False
        if not allowed:
            metrics.auth_failures_total.labels("stream").inc()
            body = error(request, "stream", 403, "not_public", refusal)
        else:
            body = ogg_stream(app, request, channel)
            if body is NOT_DONE_YET:
                return
        request.write(body)
        request.finish()

    def failed(failure: Failure) -> None:
        log.error("private stream of %s: the session lookup failed: %s", channel.id, failure.getErrorMessage())
        if not (request.finished or request._disconnected):
            request.write(error(request, "stream", 503, "unavailable", "try again shortly"))
            request.finish()

    secret = cookie_secret(request)
    assert secret is not None
    app.storage.users.by_token(secret, app.wall()).addCallbacks(found, failed)
    return NOT_DONE_YET


def hls_file(app: BroadcastServer, request: Request, channel_id: str, name: str) -> Any:
    """/channels/{id}/hls/index.m3u8 and its segments (web/streams.py)."""
    channel = app.channels.get(channel_id)
    if channel is None or not (name == "index.m3u8" or name.rpartition(".")[2] in streams.SEGMENT_EXTENSIONS):
        return error(request, "hls", 404, "not_found", f"no HLS file {name!r} for {channel_id!r}; see GET /channels")
    if not channel.config.public:
        return error(request, "hls", 403, "not_public", f"channel {channel_id!r} is not open to public HTTP listening")
    if not channel.ready:
        request.setHeader(b"Retry-After", b"1")
        return error(request, "hls", 503, "starting", f"channel {channel_id!r} is starting; retry in a second")
    if name == "index.m3u8":
        return streams.hls_playlist(app, request, channel)
    return streams.hls_segment(app, request, channel, name)


class MetricsPage(_Leaf):
    def render_GET(self, request: Request) -> Any:  # noqa: N802
        """Control's metrics at once, the core's asked of it (it answers between frames)."""

        def write(text: bytes) -> None:
            if not request.finished and not request._disconnected:
                request.write(respond(request, "metrics", 200, text, CONTENT_TYPE_LATEST))
                request.finish()

        self.app.metrics_text().addCallback(write)
        return NOT_DONE_YET


class Health(_Leaf):
    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        return respond(request, "healthz", 200, self.app.health())


class Root(Resource):
    def __init__(self, server: BroadcastServer, logins: LoginGuard | None = None) -> None:
        """``logins``: the studio ingest's failed-password record, so that guesses at /admin and at
        the ingest (the same users and passwords) count against one limit per address."""
        super().__init__()
        self.api = AdminApi(server, logins)  # its invalid-token limit guards the private streams too
        self.putChild(b"api", self.api)
        self.putChild(b"ui", ConsoleFiles(server.config))
        self.putChild(b"channels", ChannelList(server, self.api.logins))
        self.putChild(b"metrics", MetricsPage(server))
        self.putChild(b"healthz", Health(server))
        self.putChild(b"status-json.xsl", IcecastStatus(server))
        self.putChild(b"admin", IcecastAdmin(server, logins))
        self.app = server

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802
        if path == b"" and not request.postpath:
            return ConsolePage(server_config=self.app.config)
        channel_id, dot, extension = path.decode("utf-8", "replace").rpartition(".")
        if dot and extension in STREAMS and channel_id in self.app.channels:
            return MountAlias(self.app, self.api.logins)
        return NotFound()


class NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return error(request, "other", 404, "not_found", f"no such resource: {request.path.decode('utf-8', 'replace')}")


SPOOL_BYTES = 100_000  # bodies from this size on are spooled to a named file (twisted's own threshold)
BODY_BYTES = 1024 * 1024 + 1  # any body but an upload: the largest the API reads (a CAP document), and one more
UPLOAD_ROUTE = (b"POST", b"/api/v1/media")
SIGN_IN_ROUTE = (b"POST", b"/api/v1/session")
SIGN_IN_BYTES = 4096  # a name and a password: the one body the API reads from someone not yet known


class BoundedRequest(Request):
    """A request whose body is kept only up to its route's limit.

    twisted.web reads the whole body before a resource sees it; past the
    limit this stops storing it (the resource answers 413), so an oversized
    body costs bandwidth but never memory or disk. The limit is decided when
    the headers are in, before the first byte of the body: the media upload
    route may send ``max_body_bytes``, every other route ``BODY_BYTES``, and a
    request to the API without credentials none at all (the API answers 401
    before it would read a body): nobody unauthenticated gets a body stored."""

    max_body_bytes = 100 * 1024 * 1024
    spool_dir: str | None = None  # storage.media_dir/.incoming: swept at start, so a crash leaves nothing
    too_large = False
    spool_failed: OSError | None = None  # the spool file could not be written (a full disk): the API says 507
    body_limit = BODY_BYTES
    _received = 0

    def _limit(self) -> int:
        # The request line is on the channel until the body has come (twisted sets
        # self.method and self.path only then).
        method = getattr(self.channel, "_command", b"") or b""
        path = (getattr(self.channel, "_path", b"") or b"").split(b"?", 1)[0].rstrip(b"/")
        if (method, path) == SIGN_IN_ROUTE:
            return SIGN_IN_BYTES
        if path.startswith(b"/api/") and not (self.requestHeaders.hasHeader(b"authorization")
                                               or self._session_cookie()):
            return 0
        return self.max_body_bytes if (method, path) == UPLOAD_ROUTE else BODY_BYTES

    def gotLength(self, length: int | None) -> None:  # noqa: N802
        self.body_limit = self._limit()
        if length is not None and length > self.body_limit:
            self.too_large = True
            length = 0
        super().gotLength(length)
        if length is None or length >= SPOOL_BYTES:
            # A large body (an upload) goes to a named file, so the worker that decodes it
            # reads it from there: the reactor never holds, copies or pickles its bytes.
            self.content = tempfile.NamedTemporaryFile(prefix="upload-", dir=self.spool_dir)  # type: ignore[assignment]  # noqa: SIM115
        if self.body_limit > BODY_BYTES and not self.too_large and self.vet is not None:
            self._vet(self.vet)

    def _session_cookie(self) -> str | None:
        """The console's session secret from the Cookie header, read before twisted parses cookies."""
        for line in self.requestHeaders.getRawHeaders(b"cookie") or []:
            for part in line.split(b";"):
                name, _, value = part.strip().partition(b"=")
                if name == SESSION_COOKIE and value:
                    return value.decode("latin-1")
        return None

    # --- an upload's token is checked before its body is stored ------------------------------

    vet: Callable[[str], Deferred[bool]] | None = None  # is this bearer token valid? (make_site)
    _vetting = False
    _held: list[bytes] | None = None
    _received_args: tuple[bytes, bytes, bytes] | None = None

    def _vet(self, vet: Callable[[str], Deferred[bool]]) -> None:
        """Any Authorization header lifts an upload's limit to max_body_bytes: before a byte of
        its body goes to disk the token is looked up, with the connection paused meanwhile
        (what it had sent already is held, at most one read). An invalid token's body is then
        read and dropped, under the short deadline of a refused body; the API answers 401."""
        header = (self.requestHeaders.getRawHeaders(b"authorization") or [b""])[0]
        token = header[7:].strip().decode("latin-1") if header[:7].lower() == b"bearer " else ""
        if not header:  # the console's upload: its cookie, and its CSRF header checked before a byte is stored
            cookie = self._session_cookie() or ""
            csrf = (self.requestHeaders.getRawHeaders(b"x-csrf-token") or [b""])[0].decode("latin-1")
            token = cookie if cookie and csrf_matches(cookie, csrf) else ""
        self._vetting, self._held = True, []
        producer = getattr(self.channel, "_networkProducer", None)
        if producer is not None:
            producer.pauseProducing()
        checked = vet(token) if token else succeed(False)
        checked.addErrback(lambda failure: False).addCallback(self._vetted, producer)

    def _vetted(self, valid: bool, producer: Any) -> None:
        self._vetting = False
        held, self._held = self._held or [], None
        if not valid:
            self.body_limit = 0
            self._drop_body()
            arm = getattr(self.channel, "arm_refused_body", None)
            if arm is not None:
                arm()
        for chunk in held:
            self._store(chunk)
        if producer is not None and self.channel is not None:
            producer.resumeProducing()
        if self._received_args is not None:
            args, self._received_args = self._received_args, None
            super().requestReceived(*args)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        if self._vetting:  # the whole body came before the token was checked: answer after
            self._received_args = (command, path, version)
            return
        super().requestReceived(command, path, version)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
        if self._vetting and self._held is not None:
            if sum(map(len, self._held)) + len(data) <= BODY_BYTES:  # paused: at most what was buffered
                self._held.append(data)
            else:
                self._received += len(data)
                self.too_large = True
            return
        self._store(data)

    def _store(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self.body_limit:
            if not self.too_large:
                self._drop_body()
            self.too_large = True
            return
        if not self.too_large and self.spool_failed is None:
            try:
                super().handleContentChunk(data)
            except OSError as exc:  # the disk is full: keep reading, store nothing more
                self.spool_failed = exc
                self._drop_body()

    def _drop_body(self) -> None:
        """What was stored of the body goes; a spool file is closed (so removed) even if its
        buffered bytes cannot be written, and an empty buffer takes its place."""
        content = self.content
        self.content = io.BytesIO()  # type: ignore[assignment]
        if content is not None:
            try:
                content.close()
            except OSError:
                pass


class BoundedChannel(HTTPChannel):
    """twisted.web's connection, with a deadline on every request that data cannot extend.

    twisted.web's own timeout is an idle timeout: any byte resets it, so a client
    trickling a header line, or a body, a byte a minute holds the socket for good.
    Here each request, from its first byte, has HEAD_TIMEOUT_S for its head and then
    BODY_MIN_S plus one second per BODY_MIN_RATE bytes of its declared length for its
    body (a chunked body: BODY_CHUNKED_S); past that the connection is aborted. The
    first request's head is also bounded by the Sniffer, before it reaches here."""

    HEAD_TIMEOUT_S = 10.0
    BODY_MIN_S = 30.0
    BODY_MIN_RATE = 16 * 1024  # bytes/s: an upload over a poor 3G link still makes it
    BODY_CHUNKED_S = 600.0
    _deadline: Any = None

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._deadline is None and not self._handlingRequest and data.strip(b"\r\n"):
            self._arm(self.HEAD_TIMEOUT_S)  # the first byte of a request
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:  # noqa: N802
        super().allHeadersReceived()
        request = self.requests[-1] if self.requests else None
        if request is not None and getattr(request, "too_large", False):
            self.arm_refused_body()  # it will be refused: no reason to wait long for it
            return
        length, limit = self.length, getattr(request, "body_limit", BODY_BYTES)
        if length is None:
            self._arm(self.BODY_CHUNKED_S)
        else:
            self._arm(self.BODY_MIN_S + min(max(0, length), limit) / self.BODY_MIN_RATE)

    def arm_refused_body(self) -> None:
        """A body that will not be stored (over its limit, or an invalid token's upload) gets
        BODY_MIN_S to arrive, whatever length it declares."""
        self._arm(self.BODY_MIN_S)

    def allContentReceived(self) -> None:  # noqa: N802
        self._disarm()
        super().allContentReceived()

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:  # noqa: N802
        self._disarm()
        super().connectionLost(reason)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.callLater(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        metrics.connections_refused_total.labels("request_deadline").inc()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class HttpPortFactory(ServerFactory):
    """The HTTP port: studio sources (PUT/SOURCE, a webcast upgrade) go to ingest, the rest to twisted.web.

    At most ``per_address`` connections from one address at a time: one host
    cannot take the port (or the process's file descriptors) from everyone else.
    A connection over the cap is closed at once, before it is read."""

    def __init__(self, site: Site, desk: StudioDesk, per_address: int, call_later: Any = None) -> None:
        self.site = site
        self.desk = desk
        self.per_address = per_address
        self.call_later = call_later
        self.open: dict[str, int] = {}

    def buildProtocol(self, addr: Any) -> Sniffer | None:  # noqa: N802
        host = str(getattr(addr, "host", ""))
        if self.open.get(host, 0) >= self.per_address:
            metrics.connections_refused_total.labels("per_address").inc()
            return None
        self.open[host] = self.open.get(host, 0) + 1
        protocol = Sniffer(self.site, self.desk, self.call_later, webcast=self.desk)
        protocol.factory = self
        protocol.peer_host = host
        return protocol

    def closed(self, protocol: Sniffer) -> None:
        host = getattr(protocol, "peer_host", "")
        left = self.open.get(host, 0) - 1
        if left > 0:
            self.open[host] = left
        else:
            self.open.pop(host, None)


def make_site(server: BroadcastServer) -> HttpPortFactory:
    limit = server.config.storage.max_upload_bytes
    spool = incoming(server.config.storage.media_dir)

    def valid_token(token: str) -> Deferred[bool]:
        found = server.storage.users.by_token(token, server.wall())
        return found.addCallback(lambda user: user is not None and not user.get("expired"))

    class Limited(BoundedRequest):
        max_body_bytes = limit
        spool_dir = str(spool)
        vet = staticmethod(valid_token)

    # The API reads raw bodies: twisted must not parse a form-encoded or multipart body into
    # request.args on its own (a 100 MiB multipart upload would be held in memory twice).
    desk = StudioDesk(server)
    site = Site(Root(server, desk.logins), parsePOSTFormSubmission=False, reactor=server.reactor)
    site.protocol = lambda: _GenericHTTPChannelProtocol(BoundedChannel())  # type: ignore[method-assign]
    site.requestFactory = Limited
    site.displayTracebacks = False
    return HttpPortFactory(site, desk, server.config.http.max_connections_per_address,
                           call_later=server.reactor.callLater)


def incoming(media_dir: Path) -> Path:
    """Where upload bodies are spooled while they arrive: beside the media they become (the
    same disk, so its free-space check covers them), emptied here at start, since no upload
    survives a restart and a crash (kill -9) never removes its own."""
    spool = Path(media_dir) / ".incoming"
    spool.mkdir(parents=True, exist_ok=True)
    for left in spool.iterdir():
        try:
            left.unlink()
        except OSError as exc:
            log.warning("cannot remove %s left by an upload before the last stop: %s", left, exc)
    return spool
