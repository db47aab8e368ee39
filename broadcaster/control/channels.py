"""Channels as control sees them: configuration, what the core reported, and
the HTTP listeners of the Ogg stream.

The core builds each Ogg page once and sends it here; this side keeps the
burst a new listener starts with and writes each page to every listener (one
send per page per listener, framed once; a slow one is dropped by protocols/listener.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from broadcaster.config import ChannelConfig
from broadcaster.core import commands as c
from broadcaster.protocols.listener import frame_chunk


class ChannelView:
    def __init__(self, config: ChannelConfig, burst_pages: int, send: Callable[[c.Command], None]) -> None:
        self.config = config
        self.id = config.id
        self.name = config.name
        self.description = f"{config.name} ({config.zone})"
        self.rtp: dict[str, Any] = {}
        self.header_pages = b""
        self.burst: deque[bytes] = deque(maxlen=burst_pages)
        self.listeners: set[Any] = set()
        self.taps: set[Any] = set()  # HLS and MP3 encoders (control/transcode.py): listeners to the core
        self.status: dict[str, Any] = {}
        self.live: Any = None  # the studio session on air here (control/studio.py), if any
        self.ready_at = 0.0  # wall-clock time the core built it (Icecast's stream_start)
        self.listener_peak = 0
        self._send = send

    @property
    def ssrc(self) -> int:
        return int(self.rtp.get("ssrc", 0))

    @property
    def ready(self) -> bool:
        return bool(self.rtp)

    def spec(self) -> c.ChannelSpec:
        return c.ChannelSpec(id=self.id, name=self.name, zone=self.config.zone, multicast=self.config.multicast)

    # --- the listener stream (protocols/listener.Stream) ----------------------

    def stream_start(self) -> bytes:
        return self.header_pages + b"".join(self.burst)

    def add_listener(self, listener: Any) -> None:
        self.listeners.add(listener)
        self.listener_peak = max(self.listener_peak, len(self.listeners))
        self._send(c.SetListeners(self.id, self._consumers))

    def remove_listener(self, listener: Any) -> None:
        self.listeners.discard(listener)
        self._send(c.SetListeners(self.id, self._consumers))

    # --- taps: the HLS and MP3 encoders take the same pages (control/transcode.py) --------

    @property
    def _consumers(self) -> int:
        """What the core is told: a tap needs the pages as much as a listener does."""
        return len(self.listeners) + len(self.taps)

    def add_tap(self, tap: Any) -> None:
        self.taps.add(tap)
        self._send(c.SetListeners(self.id, self._consumers))

    def remove_tap(self, tap: Any) -> None:
        self.taps.discard(tap)
        self._send(c.SetListeners(self.id, self._consumers))

    def page(self, event: c.Page) -> None:
        if event.restart:
            self.burst.clear()
        if not event.data:
            return
        self.burst.append(event.data)
        chunk = frame_chunk(event.data)  # once for every HTTP/1.1 listener
        for listener in list(self.listeners):
            listener.write_page(event.data, chunk)
        for tap in list(self.taps):
            tap.write_page(event.data)
