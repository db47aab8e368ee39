"""Wiring: build control, storage, the web side and the audio core from a Config.

The audio core runs in a process of its own (core/process.py) and control
talks to it only through commands (core/commands.py); everything here runs on
control's reactor. Tests build the same server with the core in memory
(core/local.py) on a fake clock.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool

from broadcaster import metrics
from broadcaster.codecs.audiofile import load_audio
from broadcaster.codecs.shared import share, sweep
from broadcaster.config import ChannelConfig, Config, Multicast
from broadcaster.control import observed
from broadcaster.control.alerts import AlertDesk
from broadcaster.control.auth import ZoneTree
from broadcaster.control.bulletins import BulletinDesk
from broadcaster.control.channels import ChannelView
from broadcaster.control.coreproc import udp_socket
from broadcaster.control.devices import Devices, Online
from broadcaster.control.edge import EdgeRelay
from broadcaster.control.hls import HlsDesk
from broadcaster.control.mp3 import Mp3Desk
from broadcaster.control.overview import Overview
from broadcaster.control.programmes import ProgrammeRunner, programme_from_row
from broadcaster.control.records import Entry, Records
from broadcaster.control.relays import RelayDesk
from broadcaster.control.schedule import Schedule, ScheduleError
from broadcaster.control.speech import Speech
from broadcaster.control.studio import describe_live
from broadcaster.control.transcode import TranscodeThread
from broadcaster.control.tts import TextToSpeech, Voices
from broadcaster.control.workers import ProcessWorkers
from broadcaster.core import commands as c
from broadcaster.core.commands import CoreSettings
from broadcaster.core.mixer import Priority
from broadcaster.core.sources.pcm import PcmSpec
from broadcaster.storage import KeySealer, Storage, seed_from_config
from broadcaster.web.redirect import RedirectFactory
from broadcaster.web.site import make_site
from broadcaster.web.tls import TlsPortFactory, load_material, server_options

log = logging.getLogger(__name__)

EventHandler = Callable[[Any], None]


class BroadcastServer:
    """The running server. The database is the truth for zones, channels and
    loudspeakers; the configuration file only seeds an empty database.

    ``core`` is the handle on the audio core: a CoreProcess in production, a
    LocalCore in tests. Everything the core reports arrives in ``_event``."""

    def __init__(self, config: Config, reactor: Any, storage: Storage | None = None, *,
                 core: Any = None, tts: TextToSpeech | Voices | None | str = "espeak",
                 udp: Any = None, wall: Callable[[], float] = time.time, workers: Any = None,
                 pools: dict[str, Any] | None = None) -> None:
        """Tests pass a LocalCore, a fake TTS (it stands in for espeak-ng: tts.espeak_languages), a recording
        UDP socket, a fake wall clock, inline workers and thread pools that run work at once."""
        self.config = config
        self.reactor = reactor
        self.storage = storage or Storage(config.storage.path, KeySealer.from_file(config.storage.secret_file))
        if self.storage.is_empty():
            seed_from_config(self.storage, config)
        config.storage.media_dir.mkdir(parents=True, exist_ok=True)
        # Two clocks: the reactor's (monotonic under `broadcaster serve`, the core's clock)
        # paces audio and timeouts; wall-clock time stamps records and device timestamps.
        self.wall = wall
        if core is None:
            from broadcaster.control.coreproc import CoreProcess
            core = CoreProcess(reactor)
        if hasattr(core, "on_exit"):
            core.on_exit = self._core_died
        self.core = core
        self.core.on_event = self._event
        self.workers = workers or ProcessWorkers(reactor)
        self._pools = pools
        self._udp = udp
        self.udp_socket: Any = None
        self.http_port: IListeningPort | None = None
        self.redirect_port: IListeningPort | None = None  # server.tls.redirect_port: plain HTTP -> HTTPS
        self.channels: dict[str, ChannelView] = {}
        self.zones = ZoneTree()
        self.status = c.Status(ticks=0, missed=0)
        self.records = Records(self.storage, reactor, self.wall)
        self.devices = Devices(self.storage, self.core.send, reactor, self.wall,
                               pool=pools["commands"] if pools else None)
        self.schedule = Schedule(ZoneInfo(config.schedule.timezone))
        self.programmes = ProgrammeRunner(self, self.schedule, pool=pools.get("programmes") if pools else None)
        self.relays = RelayDesk(self)
        # Speech for text (bulletins, previews, alerts): the engine of each language (docs/tts.md).
        voices = tts if isinstance(tts, Voices) else Voices.from_config(config.tts, espeak=tts)
        self.speech = Speech(self, voices, pool=pools.get("speech") if pools else None)
        self.alerts = AlertDesk(self, self.speech, pool=pools.get("alerts") if pools else None)
        self.devices.on_ack = self.alerts.acknowledged
        metrics.OBSERVED.source = lambda: observed.snapshot(self)  # read at each scrape
        self.bulletins = BulletinDesk(self, pool=pools.get("bulletins") if pools else None)
        self.edge = EdgeRelay(self) if config.edge.links else None
        # The province link (broadcaster/link/): as the province, as a commune under an upstream, or both.
        from broadcaster.link.downstream import Downstream
        from broadcaster.link.upstream import Upstream
        link_pool = pools.get("link") if pools else None  # tests: a pool that runs requests at once
        self.link_upstream = Upstream(self, config.link, pool=link_pool) if config.link.downstream else None
        self.link_downstream = Downstream(self, config.link, pool=link_pool) if config.link.upstream else None
        # HLS and MP3 listeners: re-encoded from the channels' Ogg pages, only while wanted.
        self.transcode = TranscodeThread(reactor, pools.get("transcode") if pools else None)
        self.hls = HlsDesk(config.hls, self.transcode.run, reactor, self.wall)
        self.mp3 = Mp3Desk(config.mp3, self.transcode.run, -(-config.http.burst_ms // config.http.page_ms))
        self.overview = Overview(self)  # the console's /api/v1/events streams
        self._tracked: dict[str, tuple[EventHandler, EventHandler]] = {}
        self._stopping = False
        self.started_at = self.wall()  # Icecast's server_start
        self.core_failed = False  # the core's process ended while serving
        self._loop_log: dict[str, Entry] = {}
        self._ready: dict[str, Deferred[None]] = {}
        self._loops: list[tuple[LoopingCall, float, bool]] = []
        for work, interval, now in ((self._every_second, 1.0, False), (self._clean_recordings, 86400, True),
                                    (self.programmes.poll, 0.5, True), (self.bulletins.poll, 1.0, True)):
            loop = LoopingCall(work)
            loop.clock = reactor
            self._loops.append((loop, interval, now))

    # --- start and stop ------------------------------------------------------------

    def start(self, http_port: int | None = None, udp_port: int | None = None) -> tuple[int, int]:
        """Listen and start the core; returns the bound (http, udp) ports. ``ready``
        fires once every channel is built in the core."""
        self.storage.db.bind(self.reactor, self._pools)
        self.records.start()
        host = self.config.server.host
        sweep()
        self.udp_socket = self._udp or udp_socket(host, self.config.server.udp_port if udp_port is None else udp_port)
        self.devices.sock = self.udp_socket
        if not self.core.started:  # `serve` starts it first, so it boots while control imports
            self.core.start(CoreSettings.of(self.config), self.udp_socket)
        self._set_zones(self.storage.zones.all_sync())
        self._add_channels(self.storage.channels.all_sync())
        self.devices.load_all()
        self.alerts.recover()  # what a crash left on air: before any programme may start
        self.reload_programmes()
        self.bulletins.load()
        self.http_port = self.reactor.listenTCP(
            self.config.server.http_port if http_port is None else http_port, self._http_factory(), interface=host)
        tls = self.config.server.tls
        if tls is not None and tls.redirect_port is not None:
            https_port = self.http_port.getHost().port  # type: ignore[union-attr]
            self.redirect_port = self.reactor.listenTCP(tls.redirect_port, RedirectFactory(https_port, host),
                                                        interface=host)
        for loop, interval, now in self._loops:
            loop.start(interval, now=now)
        if self.edge is not None:
            edge = self.edge
            self.ready.addCallback(lambda _: None if self._stopping else edge.start())
        if self.link_upstream is not None or self.link_downstream is not None:
            self.ready.addCallback(self._start_link)
        udp = self.udp_socket.getsockname()[1] if hasattr(self.udp_socket, "getsockname") else 0
        return self.http_port.getHost().port, udp  # type: ignore[union-attr]

    def _http_factory(self) -> Any:
        """The HTTP port's factory; with ``server.tls``, inside TLS (everything on the port is HTTPS)."""
        factory = make_site(self)
        tls = self.config.server.tls
        if tls is None:
            return factory
        material = load_material(tls.certificate, tls.key)  # checked at config load; read again for this start
        if material.expires < datetime.datetime.now(datetime.UTC):
            log.warning("server.tls: the certificate %s expired on %s: browsers will refuse it", tls.certificate,
                        material.expires.isoformat())
        log.info("HTTPS on the HTTP port: %s (until %s)", material.chain[0].subject.rfc4514_string(),
                 material.expires.date().isoformat())
        return TlsPortFactory(server_options(material), factory)

    def _start_link(self, _: object = None) -> None:
        for side in (self.link_upstream, self.link_downstream):
            if side is not None and not self._stopping:
                side.start()

    @property
    def ready(self) -> Deferred[Any]:
        return DeferredList(list(self._ready.values()))

    def stop(self) -> Deferred[None]:
        """Everything on air ends as "stopped" (alerts also send their restore round), the
        core ends every subscription and reports it, then the records are written."""
        self._stopping = True
        for loop, _, _ in self._loops:
            if loop.running:
                loop.stop()
        if self.http_port is not None:
            self.http_port.stopListening()
        if self.redirect_port is not None:
            self.redirect_port.stopListening()
        self.overview.stop()
        self.alerts.stop()
        self.speech.stop()
        self.relays.stop()
        self.hls.stop()
        self.mp3.stop()
        self.transcode.stop()
        if self.edge is not None:
            self.edge.stop()
        for side in (self.link_upstream, self.link_downstream):
            if side is not None:
                side.stop()
        for session in {view.live for view in self.channels.values() if view.live is not None}:
            session.stop()

        def finish(_: object) -> Deferred[None]:
            self.programmes.stop()
            self.bulletins.stop()
            for entry in self._loop_log.values():
                self.records.close(entry, "stopped")
            self._loop_log.clear()
            self.workers.stop()
            return self.records.stop()

        return self.core.stop().addBoth(finish)

    def _core_died(self) -> None:
        """Nothing can play without the core: stop, and exit with an error for the supervisor."""
        if not self._stopping:
            self.core_failed = True
            if self.reactor.running:
                self.reactor.stop()

    # --- what the core reports -------------------------------------------------------

    def track(self, input_id: str, started: EventHandler, ended: EventHandler) -> None:
        """Route an input's InputStarted and InputEnded events to its owner."""
        self._tracked[input_id] = (started, ended)

    def untrack(self, input_id: str) -> None:
        self._tracked.pop(input_id, None)

    def _event(self, event: c.Event) -> None:
        if isinstance(event, c.Page):
            channel = self.channels.get(event.channel)
            if channel is not None:
                channel.page(event)
        elif isinstance(event, c.InputStarted):
            handlers = self._tracked.get(event.input_id)
            if handlers:
                handlers[0](event)
        elif isinstance(event, c.InputEnded):
            handlers = self._tracked.get(event.input_id)
            if handlers:
                handlers[1](event)
        elif isinstance(event, c.SessionChanged):
            self.devices.session_changed(event)
            device = self.devices.known.get(event.device_id)
            self.records.session(event.kind, event.device_id, device.zone if device else "", event.channel, event.at)
        elif isinstance(event, c.CommandAck):
            self.devices.acknowledged(event)
        elif isinstance(event, c.Status):
            self.status = event
            self.devices.heard(event.heard)
            for channel_id, status in event.channels.items():
                if channel_id in self.channels:
                    self.channels[channel_id].status = status
            self.overview.status(event)
        elif isinstance(event, c.ChannelFailed):
            log.critical("channel %s cannot play: %s", event.channel, event.reason)
            ready = self._ready.get(event.channel)
            if ready is not None and not ready.called:
                ready.callback(None)  # the other channels serve; this one answers 503
        elif isinstance(event, c.ChannelReady):
            channel = self.channels.get(event.channel)
            if channel is not None:
                channel.rtp, channel.header_pages = event.rtp, event.ogg_headers
                channel.ready_at = self.wall()
            ready = self._ready.get(event.channel)
            if ready is not None and not ready.called:
                ready.callback(None)

    # --- the database is the truth -------------------------------------------------

    def reload_zones(self) -> Deferred[None]:
        """The zone tree again, after the API added a zone (read in the storage pool)."""
        return self.storage.zones.all().addCallback(self._set_zones)

    def _set_zones(self, rows: list[dict[str, Any]]) -> None:
        self.zones = ZoneTree.from_rows(rows)

    def reload_channels(self) -> Deferred[None]:
        """Build channels that exist in the database but not yet here (added live by the API)."""
        return self.storage.channels.all().addCallback(self._add_channels)

    def _add_channels(self, rows: list[dict[str, Any]]) -> None:
        burst = -(-self.config.http.burst_ms // self.config.http.page_ms)
        for row in rows:
            if row["id"] in self.channels:
                continue
            cfg = channel_config(row)
            view = self.channels[cfg.id] = ChannelView(cfg, burst, self.core.send)
            self._ready[cfg.id] = Deferred()
            self.core.send(c.AddChannel(view.spec()))
            if cfg.loop is not None:
                self._start_loop(cfg)

    def _start_loop(self, cfg: ChannelConfig) -> None:
        """The channel's idle programme, decoded in a worker and shared with the core."""
        assert cfg.loop is not None
        path = cfg.loop
        work = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), lambda: share(load_audio(path)))

        def loaded(pcm: Any) -> None:
            input_id = f"loop-{cfg.id}"
            entry = self._loop_log[cfg.id] = self.records.open([cfg], "loop", path.name, "system")

            def ended(event: c.InputEnded) -> None:
                self.untrack(input_id)
                self._loop_log.pop(cfg.id, None)
                self.records.close(entry, "failed" if event.how == "refused" else "stopped")

            self.track(input_id, lambda event: None, ended)
            self.core.send(c.AddInput(input_id, (cfg.id,), PcmSpec(pcm, name=path.name, loop=True),
                                      priority=int(Priority.BACKGROUND), gain_db=cfg.loop_gain_db))

        def failed(failure: Any) -> None:
            log.error("channel %s: cannot play its loop programme: %s", cfg.id, failure.getErrorMessage())

        work.addCallbacks(loaded, failed)

    def channels_in(self, zones: list[str]) -> tuple[str, ...]:
        """The channels a set of target zones resolves to (their whole subtrees)."""
        covered: set[str] = set()
        for zone in zones:
            covered |= self.zones.subtree(zone)
        return tuple(sorted(c.id for c in self.channels.values() if c.config.zone in covered))

    def reload_programmes(self) -> None:
        """Every stored programme into the schedule. A row the schedule cannot take (stored
        before a channel moved zones, or by an older version without today's checks) is
        logged and skipped: one bad row never keeps the others, or the server, from starting."""
        import json

        for row in self.storage.programmes.all_sync():
            try:
                programme = programme_from_row(row, self.channels_in(json.loads(row["zones"])))
                self.schedule.add(programme)
            except (ScheduleError, ValueError, TypeError, KeyError, OverflowError) as exc:
                log.error("programme %s not scheduled: %s", row.get("id"), exc)

    def device_changed(self, device_id: str) -> Deferred[None]:
        """The API registered, edited, re-keyed or deleted one loudspeaker."""
        return self.devices.changed(device_id)

    def speaker_session(self, device_id: str) -> Online | None:
        """The loudspeaker's live subscription (address, last heartbeat, status), if online."""
        return self.devices.online.get(device_id)

    # --- housekeeping ----------------------------------------------------------------

    def _every_second(self) -> None:
        self.alerts.resend()

    def _clean_recordings(self) -> int:
        """Delete studio recordings older than the retention setting."""
        cutoff = self.wall() - self.config.live.recording_retention_days * 86400
        removed = 0
        root = self.config.live.recordings_dir
        if root.is_dir():
            for path in root.glob("*/*.ogg"):
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("removed %d studio recordings older than %d days", removed,
                     self.config.live.recording_retention_days)
        return removed

    # --- views -----------------------------------------------------------------------

    def describe_channel(self, channel: ChannelView, detail: bool = False) -> dict[str, Any]:
        """``detail``: for an authenticated caller (the API): relays' URLs and failure reasons too,
        which the public /channels must not show (a paid upstream's token, an internal DNS answer)."""
        cfg = channel.config
        return {
            "id": cfg.id,
            "name": cfg.name,
            "zone": cfg.zone,
            "public": cfg.public,
            "listeners": len(channel.listeners),
            "loudspeakers": self.devices.on_channels([cfg.id]),
            "multicast": None if cfg.multicast is None else {
                "group": cfg.multicast.group, "port": cfg.multicast.port, "ttl": cfg.multicast.ttl},
            "stream": f"/channels/{cfg.id}.ogg",
            "hls": f"/channels/{cfg.id}/hls/index.m3u8" if cfg.public else None,
            "mp3": f"/channels/{cfg.id}.mp3" if cfg.public else None,
            "sdp": f"/channels/{cfg.id}.sdp" if cfg.multicast else None,
            "live": describe_live(channel),
            "relays": [run.describe(detail) for run in self.relays.on_channel(cfg.id)],
            "title": channel.title,
        }

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "channels": len(self.channels), "schema_version": self.storage.version,
                "loudspeakers_online": len(self.devices.online),
                "ticks": self.status.ticks, "ticks_missed": self.status.missed}

    def metrics_text(self) -> Deferred[bytes]:
        """Control's metrics and the core's (asked for now), as one exposition."""
        from prometheus_client import generate_latest

        own = generate_latest(metrics.REGISTRY)

        def joined(core: bytes | list[bytes] | None) -> bytes:
            # Several core processes answer with one exposition each (core/shards.py).
            return own + (metrics.merge_expositions(core) if isinstance(core, list) else core or b"")

        return self.core.ask("metrics").addCallback(joined)


def channel_config(row: dict[str, Any]) -> ChannelConfig:
    multicast = None
    if row["multicast_group"]:
        multicast = Multicast(group=row["multicast_group"], port=row["multicast_port"], ttl=row["multicast_ttl"])
    return ChannelConfig(id=row["id"], name=row["name"], zone=row["zone"], public=bool(row["public"]),
                         multicast=multicast, loop=Path(row["loop_path"]) if row["loop_path"] else None,
                         loop_gain_db=row["loop_gain_db"])

