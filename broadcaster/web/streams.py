"""HTTP answers for the re-encoded listener streams: HLS playlists and segments, the MP3 stream.

Where they are (site.py routes them; the channel is known to exist, be public
and be ready):

- ``/channels/{id}/hls/index.m3u8`` and the aliases ``/channels/{id}.m3u8`` and
  ``/{id}.m3u8`` (one playlist; segment URIs are relative to whichever was asked);
- ``/channels/{id}/hls/{session}-{sequence}.ts`` (with ``hls.container: fmp4``:
  ``{session}-init.mp4`` and ``{session}-{sequence}.m4s``);
- ``/channels/{id}.mp3`` and ``/{id}.mp3``.

Caching is for an nginx or CDN in front: a segment's name is never reused, so it
may be kept a year (``immutable``); the playlist changes every segment and must
not be kept (``no-cache``); an error is never kept (``no-store``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.server import NOT_DONE_YET, Request

from broadcaster import metrics
from broadcaster.control.hls import CONTENT_TYPES, PLAYLIST_TYPE, HlsWindow
from broadcaster.control.mp3 import serve_mp3
from broadcaster.web import icecast

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.channels import ChannelView

SEGMENT_EXTENSIONS = tuple(CONTENT_TYPES)
SEGMENT_CACHE = b"public, max-age=31536000, immutable"
PLAYLIST_CACHE = b"no-cache"


def _error(request: Request, route: str, code: int, error_code: str, message: str) -> bytes:
    from broadcaster.web.site import error

    request.setHeader(b"Cache-Control", b"no-store")
    return error(request, route, code, error_code, message)


def playlist_prefix(request: Request, channel_id: str) -> str:
    """Segment URIs relative to the playlist's own URL, so a proxy under any path prefix works."""
    path = request.path.split(b"?", 1)[0]
    if path.startswith(b"/channels/") and b"/hls/" in path:
        return ""
    if path.startswith(b"/channels/"):
        return f"{channel_id}/hls/"
    return f"channels/{channel_id}/hls/"


def listeners_full(app: BroadcastServer, request: Request, channel_id: str) -> bytes | None:
    """A 503 when the server has http.max_listeners listeners already, Ogg and MP3 together."""
    listeners = sum(len(c.listeners) for c in app.channels.values()) + app.mp3.listeners
    if listeners < app.config.http.max_listeners:
        return None
    metrics.listeners_dropped_total.labels(channel_id, "full").inc()
    return _error(request, "stream", 503, "full", f"the server has its maximum of {listeners} listeners; "
                  "try again later")


def transcoders_full(app: BroadcastServer, request: Request, channel: ChannelView, kind: str) -> bytes | None:
    """A 503 when starting one more HLS or MP3 encoder would pass http.max_transcoders: anyone may
    ask for a public channel's HLS or MP3, and each encoder costs about 2.4 % of a core on the one
    transcode thread; past its capacity every channel's HLS and MP3 would break, not just the last."""
    desk = app.hls if kind == "hls" else app.mp3
    current = desk.channels.get(channel.id)
    if current is not None and current.running:
        return None
    running = (sum(1 for h in app.hls.channels.values() if h.running)
               + sum(1 for m in app.mp3.channels.values() if m.running))
    if running < app.config.http.max_transcoders:
        return None
    metrics.transcoders_refused_total.labels(kind).inc()
    request.setHeader(b"Retry-After", b"60")
    return _error(request, kind, 503, "busy", f"{running} HLS and MP3 encoders are running, the most this server "
                  f"runs (http.max_transcoders); the Ogg stream /channels/{channel.id}.ogg plays meanwhile")


def hls_playlist(app: BroadcastServer, request: Request, channel: ChannelView) -> Any:
    """The live playlist; on a cold channel, once its first segment exists (the encoder starts
    now), or 503 with Retry-After if that takes longer than hls.first_segment_wait_s."""
    icecast.cors(request)
    refused = transcoders_full(app, request, channel, "hls")
    if refused is not None:
        return refused
    prefix = playlist_prefix(request, channel.id)

    def answer(window: HlsWindow | None) -> None:
        if request.finished or request._disconnected:
            return
        if window is None:
            request.setHeader(b"Retry-After", b"2")
            body = _error(request, "hls", 503, "starting",
                          f"channel {channel.id!r}: the first HLS segment is not ready yet; retry in 2 s")
        else:
            text = window.playlist(prefix).encode("utf-8")
            request.setHeader(b"Cache-Control", PLAYLIST_CACHE)
            body = respond_bytes(request, "hls", text, PLAYLIST_TYPE)
            metrics.transcoded_bytes_sent_total.labels(channel.id, "hls").inc(len(body))
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    app.hls.of(channel).ready_window().addCallback(answer)
    return NOT_DONE_YET


def hls_segment(app: BroadcastServer, request: Request, channel: ChannelView, name: str) -> bytes:
    icecast.cors(request)
    hls = app.hls.channels.get(channel.id)
    segment = hls.segment(name) if hls is not None else None
    if segment is None:
        return _error(request, "hls", 404, "not_found",
                      f"no HLS segment {name!r} on channel {channel.id!r} (expired, or never made); "
                      "reload the playlist")
    request.setHeader(b"Cache-Control", SEGMENT_CACHE)
    metrics.transcoded_bytes_sent_total.labels(channel.id, "hls").inc(len(segment.data))
    return respond_bytes(request, "hls", segment.data, CONTENT_TYPES[name.rpartition(".")[2]])


def respond_bytes(request: Request, route: str, data: bytes, content_type: str) -> bytes:
    from broadcaster.web.site import respond

    return respond(request, route, 200, data, content_type)


def mp3_stream(app: BroadcastServer, request: Request, channel: ChannelView) -> Any:
    icecast.cors(request)
    refused = listeners_full(app, request, channel.id) or transcoders_full(app, request, channel, "mp3")
    if refused is not None:
        return refused
    metrics.http_requests_total.labels("mp3", "200").inc()
    channel_id = channel.id
    return serve_mp3(request, app.mp3.of(channel), max_backlog_bytes=app.config.http.max_backlog_bytes,
                     on_drop=lambda reason: metrics.listeners_dropped_total.labels(channel_id, reason).inc())
