"""Channels as control sees them: configuration, what the core reported, and
the HTTP listeners of the Ogg stream.

The core builds each Ogg page once and sends it here; this side keeps the
burst a new listener starts with and writes each page to every listener (one
send per page per listener, framed once; a slow one is dropped by protocols/listener.py).

A title (``title``, set by a studio through /admin/metadata, web/admin.py)
goes to the core, whose Ogg output starts a new chain with it; the page that
carries the chain's start also carries its header pages, which new listeners
start with from then on. The title is cleared when the live session ends.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from broadcaster.config import ChannelConfig
from broadcaster.core import commands as c
from broadcaster.protocols.listener import frame_chunk

LISTENER_IDS = itertools.count(1)  # Icecast's client ID (/admin/listclients), unique while the server runs


class ChannelView:
    def __init__(self, config: ChannelConfig, burst_pages: int, send: Callable[[c.Command], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
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
        self._live: Any = None
        self.title: str | None = None  # what plays now, as a studio said (/admin/metadata); None: unknown
        self.ready_at = 0.0  # wall-clock time the core built it (Icecast's stream_start)
        self.listener_peak = 0
        self.joined: dict[Any, tuple[int, float]] = {}  # listener -> (id, clock time it came)
        self.listener_connections = 0  # listeners ever (Icecast's listener_connections)
        self.bytes_sent = 0  # stream bytes written to listeners (Icecast's total_bytes_sent)
        self._send = send
        self.clock = clock

    @property
    def live(self) -> Any:
        """The studio session on air here (control/studio.py), if any. When it goes, its title goes."""
        return self._live

    @live.setter
    def live(self, session: Any) -> None:
        ended = self._live is not None and session is None
        self._live = session
        if ended and self.title is not None:
            self.set_title(None)

    def set_title(self, title: str | None, artist: str | None = None) -> None:
        """Show ``artist - title`` (or the title alone) to listeners; None clears it. Bounded by the caller."""
        self.title = (f"{artist} - {title}" if artist else title) if title else None
        self._send(c.SetTitle(self.id, title or None, artist or None))

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
        self.joined[listener] = (next(LISTENER_IDS), self.clock())
        self.listener_connections += 1
        self.listener_peak = max(self.listener_peak, len(self.listeners))
        self._send(c.SetListeners(self.id, self._consumers))

    def remove_listener(self, listener: Any) -> None:
        self.listeners.discard(listener)
        self.joined.pop(listener, None)
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
        if event.restart or event.headers:
            self.burst.clear()
        if event.headers:  # a new chain: new listeners start with its headers, not the old ones
            self.header_pages = event.headers
        if not event.data:
            return
        if not event.headers:  # a page that ends one chain and begins the next is no listener's start
            self.burst.append(event.data)
        chunk = frame_chunk(event.data)  # once for every HTTP/1.1 listener
        self.bytes_sent += len(event.data) * len(self.listeners)
        for listener in list(self.listeners):
            listener.write_page(event.data, chunk)
        for tap in list(self.taps):
            tap.write_page(event.data)
