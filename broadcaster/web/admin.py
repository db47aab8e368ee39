"""Icecast 2.4's admin commands on our users and zones: /admin/stats, listclients, metadata, killsource.

Studio consoles (Liquidsoap, BUTT, Mixxx) send track titles to
``/admin/metadata`` with the credentials they stream with; Icecast exporters and
dashboards read ``/admin/stats``; operators script ``listclients`` and
``killsource``. The documents have Icecast 2.4's element names and shape (checked
against a real icecast2 in tests/e2e/test_icecast_admin.py), and so do its errors:
an unknown command or mount is a 400 HTML page, a missing or wrong password a
401 with ``WWW-Authenticate: Basic``.

Authentication is HTTP Basic against our users (not Icecast's admin and source
passwords), and what each command needs is the right it would need in the API
(docs/icecast.md has the table): metadata and killsource change what a channel
carries, so they need the right to go live there (write on its zone); stats and
listclients need a user who may read the channel (listclients shows listeners'
addresses, so nothing here is public). The password check runs in the storage's
auth pool, off the reactor; an address with too many recent failures is refused
(429) before any check, so a flood of guesses costs no password hashes.

A mount is named as a listener mount (``/ch-a.ogg``, ``/ch-a``, ``/ch-a.mp3``) or an
ingest mount (``/ingest/ch-a``, ``/ingest/zone/commune-a``): whatever the console
streams to is what it sends titles for.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from broadcaster import metrics
from broadcaster.control.auth import Action, Forbidden, Principal, authorize, visible_zones
from broadcaster.control.logins import LoginGuard
from broadcaster.control.studio import clean_title, show_title
from broadcaster.web import icecast

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.channels import ChannelView

log = logging.getLogger(__name__)

COMMANDS = {"stats", "listclients", "metadata", "killsource", "listmounts"}
NEEDS_MOUNT = {"listclients", "metadata", "killsource"}
WRITES = {"metadata", "killsource"}
MOUNT = re.compile(r"^/?(?:ingest/(?:zone/(?P<zones>[^/]+)|(?P<ingest>[^/]+))"
                   r"|(?P<channel>[^/]+?)(?:\.(?:ogg|mp3|opus))?)$")
XML_HEAD = b'<?xml version="1.0"?>\n'
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # no XML 1.0 document may hold these


class AdminError(Exception):
    """An answer other than success, in Icecast's shape: status, and the message of its page."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


def xml(text: str) -> bytes:
    """Icecast's libxml2 output: ASCII, everything else as character references (what every parser reads)."""
    return XML_HEAD + text.encode("ascii", "xmlcharrefreplace") + b"\n"


def element(name: str, value: object) -> str:
    """Values come from configuration and from clients (a listener's User-Agent): whatever XML
    cannot carry is dropped, so the document always parses."""
    return f"<{name}>{escape(_NOT_XML.sub('', str(value)))}</{name}>"


def iceresponse(message: str, ok: bool = True) -> bytes:
    return xml(f"<iceresponse>{element('message', message)}{element('return', 1 if ok else 0)}</iceresponse>")


def decode_value(value: bytes, charset: str | None) -> str:
    """A query value's text. Icecast converts from ``charset=`` when a client names one; without it we
    take UTF-8 (what Liquidsoap, BUTT and Mixxx send) and fall back to Latin-1 (old Shoutcast tools)."""
    if charset:
        try:
            return value.decode(charset, "replace")
        except LookupError:
            raise AdminError(400, f"unknown charset {charset!r}") from None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class IcecastAdmin(Resource):
    """/admin/{command}: one resource, the command is the rest of the path."""

    isLeaf = True

    def __init__(self, app: BroadcastServer, logins: LoginGuard | None = None) -> None:
        super().__init__()
        self.app = app
        self.logins = logins or LoginGuard()

    # --- the request -------------------------------------------------------------------------

    def render_GET(self, request: Request) -> Any:  # noqa: N802
        command = (request.postpath or [b""])[0].decode("utf-8", "replace")
        if command not in COMMANDS:
            return self._error(request, "admin", AdminError(400, "Unrecognised command"))
        route = f"admin_{command}"
        try:
            user, password, attempted_at = self._credentials(request)
        except AdminError as exc:
            return self._error(request, route, exc)

        def run(row: dict[str, Any] | None) -> bytes:
            return self._command(command, self._authenticated(row, request, attempted_at), request)

        checked: Deferred[dict[str, Any] | None] = self.app.storage.users.by_password(user, password)
        checked.addCallback(run).addCallbacks(
            lambda body: self._send(request, route, 200, body, "text/xml; charset=utf-8"),
            lambda failure: self._failed(request, route, failure))
        return NOT_DONE_YET

    def _credentials(self, request: Request) -> tuple[str, str, float]:
        """The Basic credentials, and when their check was counted (to forgive it if they are right)."""
        header = (request.getHeader("authorization") or "").strip()
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise AdminError(401, "send HTTP Basic credentials of a broadcaster user")
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AdminError(401, "malformed Basic credentials") from None
        if not sep or not user:
            raise AdminError(401, "malformed Basic credentials")
        address, now = self._address(request), self.app.reactor.seconds()
        if not self.logins.attempt(address, now):  # refused before any password check; counted until it succeeds
            metrics.auth_limited_total.labels("icecast_admin").inc()
            wait = self.logins.retry_after_s(address, now)
            raise AdminError(429, f"too many wrong passwords from {address}; try again in {wait:.0f} s", wait)
        return user, password, now

    def _authenticated(self, row: dict[str, Any] | None, request: Request, attempted_at: float) -> Principal:
        address = self._address(request)
        if row is None:
            metrics.auth_failures_total.labels("icecast_admin").inc()
            raise AdminError(401, "wrong user name or password")
        self.logins.forgive(address, attempted_at)
        return Principal.from_row(row, address)

    @staticmethod
    def _address(request: Request) -> str:
        return str(getattr(request.getClientAddress(), "host", ""))

    def _command(self, command: str, principal: Principal, request: Request) -> bytes:
        args: dict[bytes, list[bytes]] = request.args or {}

        def arg(name: str) -> bytes | None:
            values = args.get(name.encode("ascii"))
            return values[0] if values else None

        mount_raw = arg("mount")
        mount = mount_raw.decode("utf-8", "replace") if mount_raw is not None else None
        channels: list[ChannelView] = []
        if mount is not None:
            channels = self._channels(mount)
        elif command in NEEDS_MOUNT:
            raise AdminError(400, "Missing parameter: mount")
        try:
            zones = [c.config.zone for c in channels]
            authorize(principal, Action.WRITE if command in WRITES else Action.READ, zones, self.app.zones)
        except Forbidden as exc:
            raise AdminError(403, str(exc)) from None
        if command == "stats" or command == "listmounts":
            shown = channels or self._visible(principal)
            return self._stats(shown, request) if command == "stats" else self._listmounts(shown)
        if command == "listclients":
            return self._listclients(channels, mount or "")
        if command == "metadata":
            return self._metadata(channels, principal, arg)
        return self._killsource(channels, principal, mount or "")

    def _channels(self, mount: str) -> list[ChannelView]:
        """The channels a mount names; an unknown one is Icecast's "Source does not exist"."""
        match = MOUNT.match(mount)
        found: list[ChannelView] = []
        if match is not None and match["zones"]:
            zones = [z for z in match["zones"].split(",") if z]
            if zones and all(z in self.app.zones for z in zones):
                found = [self.app.channels[c] for c in self.app.channels_in(zones)]
        elif match is not None:
            channel = self.app.channels.get(match["ingest"] or match["channel"])
            found = [channel] if channel is not None else []
        if not found:
            raise AdminError(400, f"Source does not exist: no channel or zone for mount {mount!r} "
                             "(name it /CHANNEL.ogg, /CHANNEL, /ingest/CHANNEL or /ingest/zone/ZONE)")
        return found

    def _visible(self, principal: Principal) -> list[ChannelView]:
        zones = visible_zones(principal, self.app.zones)
        return [c for c in self.app.channels.values() if zones is None or c.config.zone in zones]

    # --- the commands ------------------------------------------------------------------------

    def _stats(self, channels: Iterable[ChannelView], request: Request) -> bytes:
        app = self.app
        shown = [c for c in channels if c.ready]
        every = list(app.channels.values())
        listeners = sum(len(c.listeners) for c in every)
        sources = sum(1 for c in every if c.live is not None)
        connections = sum(c.listener_connections for c in every)
        server_start, server_start_iso = icecast.times(app.started_at)
        top = {
            "admin": "admin@localhost", "client_connections": connections + sources, "clients": listeners + sources,
            "connections": connections + sources, "file_connections": 0,
            "host": request.getRequestHostname().decode("utf-8", "replace"),
            "listener_connections": connections, "listeners": listeners, "location": app.config.schedule.timezone,
            "server_id": icecast.server_id(), "server_start": server_start,
            "server_start_iso8601": server_start_iso, "source_client_connections": sources,
            "source_relay_connections": 0, "source_total_connections": sources, "sources": len(shown),
            "stats": 0, "stats_connections": 0}
        parts = [element(k, v) for k, v in top.items()]
        base = icecast.base_url(request)
        for channel in shown:
            fields = icecast.source_fields(app, channel, base)
            fields.pop("dummy", None)
            live = channel.live
            fields.update({
                "max_listeners": app.config.http.max_listeners, "public": 1 if channel.config.public else 0,
                "slow_listeners": 0, "total_bytes_read": live.bytes if live is not None else 0,
                "total_bytes_sent": channel.bytes_sent})
            if live is not None:
                fields["source_ip"] = live.principal.remote or ""
            if channel.title:
                fields["title"] = channel.title
            body = "".join(element(k, v) for k, v in sorted(fields.items()))
            parts.append(f"<source mount={quoteattr('/' + channel.id + '.ogg')}>{body}</source>")
        return xml(f"<icestats>{''.join(parts)}</icestats>")

    def _listmounts(self, channels: Iterable[ChannelView]) -> bytes:
        now = self.app.wall()
        parts = []
        for channel in channels:
            if not channel.ready:
                continue
            body = (element("fallback", "") + element("listeners", len(channel.listeners))
                    + element("Connected", max(0, int(now - channel.ready_at))) + element("content-type", "audio/ogg"))
            parts.append(f"<source mount={quoteattr('/' + channel.id + '.ogg')}>{body}</source>")
        return xml(f"<icestats>{''.join(parts)}</icestats>")

    def _listclients(self, channels: list[ChannelView], mount: str) -> bytes:
        parts = []
        for channel in channels:
            now = channel.clock()
            rows = []
            for listener in list(channel.listeners):
                ident, since = channel.joined.get(listener, (0, now))
                request = getattr(listener, "request", None)
                address = getattr(request.getClientAddress(), "host", "") if request is not None else ""
                agent = (request.getHeader("user-agent") if request is not None else None) or "Unknown"
                rows.append(f"<listener>{element('IP', address)}{element('UserAgent', agent)}"
                            f"{element('Connected', max(0, int(now - since)))}{element('ID', ident)}"
                            "</listener>")
            name = mount if len(channels) == 1 else f"/{channel.id}.ogg"
            parts.append(f"<source mount={quoteattr(name)}>{element('Listeners', len(channel.listeners))}"
                         f"{''.join(rows)}</source>")
        return xml(f"<icestats>{''.join(parts)}</icestats>")

    def _metadata(self, channels: list[ChannelView], principal: Principal, arg: Any) -> bytes:
        mode = (arg("mode") or b"").decode("ascii", "replace")
        if mode != "updinfo":
            return iceresponse("No such action", ok=False)
        charset_raw = arg("charset")
        charset = charset_raw.decode("ascii", "replace") if charset_raw else None
        song, title, artist = (arg(name) for name in ("song", "title", "artist"))
        if song is None and title is None:
            raise AdminError(400, "Missing parameter: song (or title and artist)")
        name = clean_title(decode_value(song if song is not None else title or b"", charset))
        by = clean_title(decode_value(artist, charset)) if song is None and artist is not None else ""
        show_title(self.app, channels, name, by, principal.name)
        return iceresponse("Metadata update successful")

    def _killsource(self, channels: list[ChannelView], principal: Principal, mount: str) -> bytes:
        sessions = {id(c.live): c.live for c in channels if c.live is not None}
        if not sessions:
            raise AdminError(400, f"Source does not exist: no studio is live on mount {mount!r}")
        for session in sessions.values():
            # A session on more channels than the mount names (a zone mount: the province live on every
            # commune) is taken off all of them: the caller must be allowed on all of them, as going live is.
            try:
                authorize(principal, Action.WRITE, [c.config.zone for c in session.channels], self.app.zones)
            except Forbidden as exc:
                raise AdminError(403, f"the studio on {mount!r} is live on more channels than yours: {exc}") from None
        for session in sessions.values():
            if session.entry is not None:  # a console not on air yet has no broadcast-log entry
                self.app.records.note(session.entry, f"source removed by {principal.name} (/admin/killsource)")
            log.info("live session %s removed by %s through /admin/killsource", session.id, principal.name)
            session.kick()
        return iceresponse("Source Removed")

    # --- answers -----------------------------------------------------------------------------

    def _failed(self, request: Request, route: str, failure: Any) -> None:
        if failure.check(AdminError):
            self._finish(request, self._error(request, route, failure.value))
            return
        log.error("%s failed: %s", route, failure.getTraceback())
        self._finish(request, self._error(request, route, AdminError(500, "internal error (see the server log)")))

    def _send(self, request: Request, route: str, code: int, body: bytes, content_type: str) -> None:
        self._finish(request, self._respond(request, route, code, body, content_type))

    @staticmethod
    def _finish(request: Request, data: bytes) -> None:
        if not request.finished and not request._disconnected:
            request.write(data)
            request.finish()

    @staticmethod
    def _respond(request: Request, route: str, code: int, body: bytes, content_type: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-cache, no-store")
        metrics.http_requests_total.labels(route, str(code)).inc()
        return body

    def _error(self, request: Request, route: str, exc: AdminError) -> bytes:
        if exc.status == 401:
            request.setHeader(b"WWW-Authenticate", b'Basic realm="broadcaster"')
            body = f"You need to authenticate: {exc.message}\r\n".encode()
            return self._respond(request, route, 401, body, "text/plain; charset=utf-8")
        if exc.status == 429:
            request.setHeader(b"Retry-After", str(max(1, round(exc.retry_after_s or 1))).encode("ascii"))
            return self._respond(request, route, 429, f"{exc.message}\r\n".encode(), "text/plain; charset=utf-8")
        page = (f"<html><head><title>Error {exc.status}</title></head><body><b>{exc.status} - "
                f"{escape(exc.message)}</b></body></html>\r\n")
        return self._respond(request, route, exc.status, page.encode("utf-8"), "text/html; charset=utf-8")
