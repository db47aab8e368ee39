"""The overview: what each channel carries now, its level, its loudspeakers and the alerts on it,
pushed to the console's open /api/v1/events streams once a second.

Built on control's reactor from what control already holds when the core's Status arrives (once
a second): the status itself (inputs and level per channel), the ChannelViews (a live session's
speaker), the device registry (who is online) and the alert desk. No SQL, nothing from the audio
loop. Each channel's part is serialised once per second, whatever the number of streams; a stream
gets the parts of the channels its user may see, joined (streams that see the same zones share
the bytes), and the alerts on them with only the target zones and channels it may see.

A stream is a request kept open (text/event-stream). One that cannot keep up (its socket's buffer
full, then MAX_BACKLOG_BYTES more waiting) is dropped, never waited for; a comment line every
HEARTBEAT_S keeps proxies from closing a quiet one (the core stalled, say).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.web.server import Request
from zope.interface import implementer

from broadcaster import metrics
from broadcaster.core import commands as c
from broadcaster.core.mixer import Priority

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer

log = logging.getLogger(__name__)

PER_USER = 4          # streams one user may hold open (a few tabs); the next is a 429
PER_ADDRESS = 16      # from one address (a commune office behind NAT)
HEARTBEAT_S = 15.0
RETRY_MS = 3000       # the browser's reconnect delay (the stream's `retry:` line)
MAX_BACKLOG_BYTES = 64 * 1024  # about a minute of overviews waiting for a slow client
# A stream is authenticated when it opens; it is ended after this long and the browser opens it again,
# authenticated again, so a signed-out session or a revoked token stops getting events within minutes.
MAX_AGE_S = 300.0

# What an input's id says it is (the desks name their inputs so: control/*.py).
KINDS = (("a-", "alert"), ("bl-", "bulletin"), ("p-", "programme"), ("r-", "relay"), ("l-", "live"),
         ("loop-", "loop"), ("edge-", "edge"))


def input_kind(input_id: str | None) -> str:
    for prefix, kind in KINDS:
        if input_id and input_id.startswith(prefix):
            return kind
    return "other"


def class_name(priority: int) -> str:
    try:
        return Priority(priority).name.lower()
    except ValueError:
        return str(priority)


class Limited(Exception):
    """Too many streams for this user or address: ``limit`` says which."""

    def __init__(self, limit: str, most: int) -> None:
        super().__init__(f"at most {most} event streams per {limit} at a time; close another first")
        self.limit = limit


@implementer(IPushProducer)
class EventStream:
    """One open stream: the request, who it is for, and whether its socket keeps up."""

    def __init__(self, request: Request, user: str, address: str, visible: Collection[str] | None,
                 on_close: Callable[[EventStream], None], call_later: Callable[..., Any]) -> None:
        self.request = request
        self._call_later = call_later
        self._expiry: Any = None
        self.user = user
        self.address = address
        self.visible = None if visible is None else frozenset(visible)  # zones; None: all (an admin)
        self._on_close = on_close
        self.paused = False
        self.backlog = 0
        self.closed = False

    def start(self, first: bytes) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addBoth(lambda _: self._close())
        self._expiry = self._call_later(MAX_AGE_S, self.end)
        self.write(b"retry: %d\n\n" % RETRY_MS + first)

    def end(self) -> None:
        """Finish the reply (its age is up, or the server stops): the browser reconnects."""
        if self.closed:
            return
        self._close()
        self.request.unregisterProducer()
        self.request.finish()

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.paused:
            self.backlog += len(data)
            if self.backlog > MAX_BACKLOG_BYTES:
                self.drop("slow")
                return
        self.request.write(data)

    def drop(self, reason: str) -> None:
        if self.closed:
            return
        metrics.event_streams_dropped_total.labels(reason).inc()
        self._close()
        transport = self.request.channel.transport if self.request.channel else None
        if transport is not None:
            transport.abortConnection()  # type: ignore[attr-defined]  # TCP transports have it

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._expiry is not None and self._expiry.active():
                self._expiry.cancel()
            self._on_close(self)

    # IPushProducer: Twisted pauses us when the socket's send buffer is full.
    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        self.backlog = 0

    def stopProducing(self) -> None:  # noqa: N802
        self._close()


class Overview:
    """The overview's state (since when each channel's item has been on air) and its streams."""

    def __init__(self, app: BroadcastServer) -> None:
        self.app = app
        self.streams: set[EventStream] = set()
        self._on_air: dict[str, tuple[str, float]] = {}  # channel -> (input id on air, wall time first seen)
        self._parts: dict[str, bytes] = {}  # channel -> its JSON, this second's
        self._alerts: list[dict[str, Any]] = []  # each alert on air, described whole (an admin's view)
        self._at = 0.0
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = app.reactor

    # --- the core's Status, once a second ---------------------------------------------

    def status(self, event: c.Status) -> None:
        """Note what went on air (for ``since``), then, if anyone watches, build and send."""
        now = self.app.wall()
        for channel_id, status in event.channels.items():
            top = self._top(status)
            held = self._on_air.get(channel_id)
            if top is None:
                self._on_air.pop(channel_id, None)
            elif held is None or held[0] != top["id"]:
                self._on_air[channel_id] = (top["id"], now)
        if self.streams:
            try:
                self._build(now)
            except Exception:  # the overview must never break the handling of the core's status
                log.exception("the overview could not be built; the streams wait for the next second")
                return
            self._send_all()

    @staticmethod
    def _top(status: dict[str, Any]) -> dict[str, Any] | None:
        """The input the listeners hear: the highest class with audio (the mixer's top), not muted."""
        top = status.get("top")
        if top is None:
            return None
        return next((i for i in status.get("inputs", ()) if i["priority"] == top and not i["preempted"]), None)

    def _build(self, now: float) -> None:
        app = self.app
        registered: dict[str, int] = {}
        for device in app.devices.known.values():
            registered[device.channel] = registered.get(device.channel, 0) + 1
        alerts_on: dict[str, list[dict[str, Any]]] = {}
        self._alerts = []
        for alert in app.alerts.active.values():
            described = {"id": alert.id, "title": alert.title, "class": alert.priority.name.lower(),
                         "priority": int(alert.priority), "zones": alert.zones, "channels": alert.channels,
                         "since": alert.started_wall or None, "by": alert.created_by,
                         "commanded": len(alert.commanded), "acknowledged": len(alert.acknowledged)}
            self._alerts.append(described)
            for channel_id in alert.channels:
                alerts_on.setdefault(channel_id, []).append(described)
        self._parts = {}
        for channel_id, view in app.channels.items():
            status = view.status
            top = self._top(status)
            on_air = None
            if top is not None:
                held = self._on_air.get(channel_id)
                kind = input_kind(top["id"])
                by = None
                if kind == "live" and view.live is not None:
                    by = view.live.principal.name
                elif kind == "alert" and top["id"] in app.alerts.active:
                    by = app.alerts.active[top["id"]].created_by
                on_air = {"kind": kind, "class": class_name(top["priority"]), "priority": top["priority"],
                          "name": top.get("name") or top["id"], "since": held[1] if held else None, "by": by}
            online = app.devices.on_channels([channel_id])
            part = {"id": channel_id, "name": view.name, "zone": view.config.zone, "on_air": on_air,
                    "level": status.get("level") or {"rms_dbfs": None, "peak_dbfs": None},
                    "loudspeakers": {"online": online, "offline": max(0, registered.get(channel_id, 0) - online)},
                    "alerts": [{k: a[k] for k in ("id", "title", "class", "commanded", "acknowledged")}
                               for a in alerts_on.get(channel_id, ())],
                    "listeners": len(view.listeners)}
            self._parts[channel_id] = _json(part)
        self._at = now

    def _event_for(self, visible: frozenset[str] | None, cache: dict[frozenset[str] | None, bytes]) -> bytes:
        found = cache.get(visible)
        if found is None:
            channels = [cid for cid, view in self.app.channels.items()
                        if cid in self._parts and (visible is None or view.config.zone in visible)]
            seen = set(channels)
            alerts = [_json(self._alert_for(a, visible, seen)) for a in self._alerts
                      if seen.intersection(a["channels"])]
            found = cache[visible] = (b'event: overview\ndata: {"at":%s,"channels":[%s],"alerts":[%s]}\n\n' % (
                json.dumps(self._at).encode(), b",".join(self._parts[cid] for cid in channels), b",".join(alerts)))
        return found

    def _alert_for(self, alert: dict[str, Any], visible: frozenset[str] | None, seen: set[str]) -> dict[str, Any]:
        """An alert as a caller may see it: an alert on several communes is shown to each without the
        others' zone and channel ids. A target above the caller's zones (the province) is named by the
        zones of the caller's channels it reaches."""
        if visible is None:
            return alert
        channels = [cid for cid in alert["channels"] if cid in seen]
        zones = [z for z in alert["zones"] if z in visible]
        for cid in channels:
            zone = self.app.channels[cid].config.zone
            if not any(z in zones for z in self.app.zones.ancestors(zone)):
                zones.append(zone)
        return {**alert, "zones": zones, "channels": channels}

    def _send_all(self) -> None:
        cache: dict[frozenset[str] | None, bytes] = {}
        for stream in list(self.streams):
            stream.write(self._event_for(stream.visible, cache))

    def _beat(self) -> None:
        for stream in list(self.streams):
            stream.write(b": heartbeat\n\n")

    # --- the streams ---------------------------------------------------------------

    def check(self, user: str, address: str) -> None:
        """Raise Limited if this user or address holds as many streams as it may."""
        if sum(1 for s in self.streams if s.user == user) >= PER_USER:
            metrics.event_streams_refused_total.labels("user").inc()
            raise Limited("user", PER_USER)
        if sum(1 for s in self.streams if s.address == address) >= PER_ADDRESS:
            metrics.event_streams_refused_total.labels("address").inc()
            raise Limited("address", PER_ADDRESS)

    def open(self, request: Request, user: str, address: str, visible: Collection[str] | None) -> None:
        """Start a stream on this request (its head already set; ``check`` passed just before)."""
        stream = EventStream(request, user, address, visible, self._closed, self.app.reactor.callLater)
        if not self.streams:  # nothing was built while no one watched
            self._build(self.app.wall())
        self.streams.add(stream)
        metrics.event_streams.set(len(self.streams))
        if not self._heartbeat.running:
            self._heartbeat.start(HEARTBEAT_S, now=False)
        stream.start(self._event_for(stream.visible, {}))  # at once: the page need not wait a second

    def _closed(self, stream: EventStream) -> None:
        self.streams.discard(stream)
        metrics.event_streams.set(len(self.streams))
        if not self.streams and self._heartbeat.running:
            self._heartbeat.stop()

    def stop(self) -> None:
        """The server stops: every stream ends (the browser reconnects to whoever serves next)."""
        for stream in list(self.streams):
            stream.end()


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
