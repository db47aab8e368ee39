"""What Icecast clients expect of the HTTP port: /status-json.xsl, mount aliases, playlists, CORS.

Icecast exporters, AzuraCast-style dashboards and monitoring scripts read
``/status-json.xsl``; players are given ``/{channel}.ogg`` (an Icecast mount
name), ``.m3u`` and ``.pls`` playlists, and browsers on another origin need CORS
to play or read them. The status document has Icecast 2.4's field names and its
shape, quirk included: ``icestats.source`` is an object when there is one source
and a list when there are several (what Icecast's own XSL produces, and so what
exporters parse). Only public channels are listed or served here.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from twisted.web import http_headers
from twisted.web.server import Request

from broadcaster import __version__
from broadcaster.api.session import served_over_tls

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.channels import ChannelView

PLAYLISTS = {"m3u": "audio/x-mpegurl", "pls": "audio/x-scpls"}

# Icecast (and Shoutcast) send icy-* header names in lower case and their values as the source
# gave them: UTF-8 bytes for a Vietnamese name (checked against icecast2 in
# tests/e2e/test_icecast_admin.py). Players take the names as they come: ffmpeg and mpv make
# them metadata keys ("icy-name"), a few radios compare them case-sensitively. twisted.web would
# send "Icy-Name"; its table of unconventional capitalisations keeps ours as Icecast spells them.
ICY_HEADERS = ("icy-name", "icy-description", "icy-genre", "icy-url", "icy-pub", "icy-br", "icy-metaint")
_encoder = getattr(http_headers, "_NameEncoder", None)
if isinstance(getattr(_encoder, "_caseMappings", None), dict):
    _encoder._caseMappings.update(  # type: ignore[union-attr]
        {"-".join(w.capitalize() for w in n.split("-")).encode(): n.encode() for n in ICY_HEADERS})


def cors(request: Request) -> None:
    """Public streams and the status page may be read from any origin (a web player elsewhere)."""
    request.setHeader(b"Access-Control-Allow-Origin", b"*")
    request.setHeader(b"Access-Control-Allow-Methods", b"GET, HEAD, OPTIONS")
    request.setHeader(b"Access-Control-Allow-Headers", b"Icy-MetaData, Range")
    request.setHeader(b"Access-Control-Expose-Headers", b"Icy-Name, Icy-Description, Icy-Pub, Icy-Metaint, Icy-Br")


def preflight(request: Request) -> bytes:
    cors(request)
    request.setHeader(b"Access-Control-Max-Age", b"86400")
    request.setResponseCode(204)
    return b""


def base_url(request: Request) -> str:
    """The URL clients reached us at (the Host they sent), for the URLs we hand them: https over
    server.tls or behind a TLS proxy on this machine, as the session cookie's Secure is decided."""
    header = request.getHeader(b"host")
    if header:
        host = header.decode("ascii", "replace")
    else:
        address = request.getHost()
        host = f"{address.host}:{address.port}"
    return f"{'https' if served_over_tls(request) else 'http'}://{host}"


def times(at: float) -> tuple[str, str]:
    """Icecast's two spellings of a time: RFC 2822 and ISO 8601 with a numeric zone."""
    return formatdate(at, localtime=True), time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(at))


def server_id() -> str:
    return f"broadcaster {__version__}"


def source_fields(app: BroadcastServer, channel: ChannelView, base: str) -> dict[str, Any]:
    """One mount's fields, as /status-json.xsl and /admin/stats (web/admin.py) both give them."""
    stream_start, stream_start_iso = times(channel.ready_at)
    fields: dict[str, Any] = {
        "audio_info": f"bitrate={app.config.audio.bitrate // 1000};channels=1;samplerate=48000",
        "genre": "public address",
        "listener_peak": channel.listener_peak,
        "listeners": len(channel.listeners),
        "listenurl": f"{base}/{channel.id}.ogg",
        "server_description": channel.description,
        "server_name": channel.name,
        "server_type": "audio/ogg",
        "stream_start": stream_start,
        "stream_start_iso8601": stream_start_iso,
        "subtype": "Opus",
    }
    title = getattr(channel, "title", None)
    if title:
        fields["title"] = title  # Icecast shows a mount's title once a source sent one
    fields["dummy"] = None
    return fields


def status(app: BroadcastServer, request: Request) -> dict[str, Any]:
    base = base_url(request)
    server_start, server_start_iso = times(app.started_at)
    sources = [source_fields(app, channel, base) for channel in app.channels.values()
               if channel.config.public and channel.ready]
    icestats: dict[str, Any] = {
        "admin": "admin@localhost", "host": request.getRequestHostname().decode("utf-8", "replace"),
        "location": app.config.schedule.timezone, "server_id": server_id(),
        "server_start": server_start, "server_start_iso8601": server_start_iso}
    if sources:
        icestats["source"] = sources[0] if len(sources) == 1 else sources
    return {"icestats": icestats}


def playlist(channel: ChannelView, kind: str, base: str) -> str:
    url = f"{base}/{channel.id}.ogg"
    if kind == "m3u":
        return f"#EXTM3U\n#EXTINF:-1,{channel.name}\n{url}\n"
    return f"[playlist]\nNumberOfEntries=1\nFile1={url}\nTitle1={channel.name}\nLength1=-1\nVersion=2\n"
