"""A channel: one mix bus, one Opus encoder, one RTP stream, one Ogg stream.

Each tick the channel mixes and encodes exactly once, then hands the same
bytes to every consumer: the RTP packet to the loudspeaker fan-out and the
multicast group, the Ogg page (about once a second) to every HTTP listener.
A channel that nobody consumes advances its sources and media time and does
nothing else.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from broadcaster import metrics
from broadcaster.codecs.ogg import OggOpusWriter
from broadcaster.codecs.opus import OpusEncoder, OpusSettings, silence_packet
from broadcaster.config import AudioConfig, ChannelConfig, HttpConfig
from broadcaster.core.mixer import Mixer
from broadcaster.protocols.rtp import OPUS_CLOCK_RATE, OPUS_PAYLOAD_TYPE, RtpPacketizer

log = logging.getLogger(__name__)


class Listener(Protocol):
    """An HTTP listener as the channel sees it: it takes pages."""

    def write_page(self, page: bytes) -> None: ...


class PacketSink(Protocol):
    def send(self, packet: bytes) -> tuple[int, int]: ...

    def __len__(self) -> int: ...


class Fanout(PacketSink, Protocol):
    def set_targets(self, addresses: list[tuple[str, int]]) -> None: ...


class Channel:
    def __init__(self, config: ChannelConfig, audio: AudioConfig, http: HttpConfig,
                 speakers: Fanout, multicast: PacketSink | None = None,
                 speaker_addresses: Callable[[], list[tuple[str, int]]] = list) -> None:
        self.config = config
        self.id = config.id
        self.name = config.name
        self.description = f"{config.name} ({config.zone})"
        self.frame_samples = audio.frame_samples
        self.mixer = Mixer(audio.frame_samples)
        settings = OpusSettings(frame_samples=audio.frame_samples, bitrate=audio.bitrate,
                                complexity=audio.complexity, dtx=audio.dtx, fec=audio.fec,
                                packet_loss_percent=audio.packet_loss_percent)
        self.encoder = OpusEncoder(settings)
        self.silence = silence_packet(settings)
        self.ssrc = secrets.randbits(32)
        self.packetizer = RtpPacketizer(ssrc=self.ssrc, payload_type=OPUS_PAYLOAD_TYPE,
                                        first_sequence=secrets.randbits(16),
                                        first_timestamp=secrets.randbits(32))
        self.ogg = OggOpusWriter(serial=secrets.randbits(31), pre_skip=self.encoder.lookahead,
                                 page_samples=48 * http.page_ms,
                                 comments=[f"TITLE={config.name}", f"CHANNEL={config.id}"])
        self.burst: deque[bytes] = deque(maxlen=-(-http.burst_ms // http.page_ms))
        self.speakers = speakers
        self._speaker_addresses = speaker_addresses
        self._speakers_dirty = False
        self.multicast = multicast
        self.listeners: set[Listener] = set()
        self.live: Any = None  # the studio session on air here (broadcaster.studio.LiveSession), if any
        # Called after each frame is sent until they return True (alert latency probes).
        self.after_send: list[Callable[[], bool]] = []
        self._marker = True
        self._last_tick: int | None = None
        self._labels_rtp = (self.id, "rtp")
        self._labels_http = (self.id, "http")
        self._rtp_packets = metrics.packets_sent_total.labels(*self._labels_rtp)
        self._rtp_bytes = metrics.bytes_sent_total.labels(*self._labels_rtp)
        self._rtp_errors = metrics.send_errors_total.labels(*self._labels_rtp)
        self._http_pages = metrics.packets_sent_total.labels(*self._labels_http)
        self._http_bytes = metrics.bytes_sent_total.labels(*self._labels_http)
        self._encode_seconds = metrics.encode_seconds.labels(self.id)
        self._frames_encoded = metrics.frames_encoded_total.labels(self.id)
        self._frames_silent = metrics.frames_silent_total.labels(self.id)

    # --- consumers -------------------------------------------------------

    @property
    def rtp_info(self) -> dict[str, int | str]:
        return {"codec": "opus", "payload_type": OPUS_PAYLOAD_TYPE, "clock_rate": OPUS_CLOCK_RATE,
                "channels": 1, "ssrc": self.ssrc, "frame_ms": self.frame_samples // 48}

    def add_listener(self, listener: Listener) -> None:
        self.listeners.add(listener)
        metrics.subscribers.labels(*self._labels_http).set(len(self.listeners))

    def remove_listener(self, listener: Listener) -> None:
        self.listeners.discard(listener)
        metrics.subscribers.labels(*self._labels_http).set(len(self.listeners))

    def speakers_changed(self) -> None:
        """Subscriptions changed; the send list is rebuilt once, at the next tick,
        however many loudspeakers (re)subscribed in between."""
        self._speakers_dirty = True

    def _rebuild_speakers(self) -> None:
        self._speakers_dirty = False
        addresses = self._speaker_addresses()
        self.speakers.set_targets(addresses)
        metrics.subscribers.labels(*self._labels_rtp).set(len(addresses))

    @property
    def has_consumers(self) -> bool:
        return bool(self.listeners) or len(self.speakers) > 0 or self.multicast is not None

    # --- the frame -------------------------------------------------------

    def tick(self, tick: int, deadline: float) -> None:
        if self._speakers_dirty:
            self._rebuild_speakers()
        if self._last_tick is not None and tick > self._last_tick + 1:
            # The clock skipped ticks after a stall: keep media time with wall time,
            # so programmes stay on schedule and receivers see the gap in RTP timestamps.
            for _ in range(tick - self._last_tick - 1):
                self.mixer.skip()
                self.packetizer.skip(self.frame_samples)
        self._last_tick = tick
        if not self.has_consumers:
            self.mixer.skip()
            self.packetizer.skip(self.frame_samples)
            self._marker = True
            self.burst.clear()  # a listener arriving later must not get stale audio
            self.ogg.flush()
            return
        started = time.perf_counter()
        frame = self.mixer.mix()
        if frame is None:
            packet = self.silence
            self._frames_silent.inc()
        else:
            packet = self.encoder.encode(frame)
            self._frames_encoded.inc()
            self._encode_seconds.observe(time.perf_counter() - started)
        # The marker bit flags new content: the stream's start, or a higher class taking over.
        rtp = self.packetizer.packetize(packet, self.frame_samples, marker=self._marker or self.mixer.top_rose)
        self._marker = False
        self._deliver_rtp(rtp)
        if self.after_send:
            self.after_send[:] = [probe for probe in self.after_send if not probe()]
        page = self.ogg.add_packet(packet, self.frame_samples)
        if page is not None:
            self._deliver_page(page)

    def _deliver_rtp(self, rtp: bytes) -> None:
        sent, failed = self.speakers.send(rtp)
        if self.multicast is not None:
            m_sent, m_failed = self.multicast.send(rtp)
            sent += m_sent
            failed += m_failed
        if sent:
            self._rtp_packets.inc(sent)
            self._rtp_bytes.inc(sent * len(rtp))
        if failed:
            self._rtp_errors.inc(failed)

    def _deliver_page(self, page: bytes) -> None:
        self.burst.append(page)
        for listener in list(self.listeners):
            listener.write_page(page)
        if self.listeners:
            self._http_pages.inc(len(self.listeners))
            self._http_bytes.inc(len(self.listeners) * len(page))

    def stream_start(self) -> bytes:
        """What a new HTTP listener receives first: Ogg headers, then the burst."""
        return self.ogg.header_pages + b"".join(self.burst)
