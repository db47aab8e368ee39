"""The relay process: one upstream fetched, decoded once, paced, handed to control.

``python -m broadcaster.relay.worker '<json settings>'``. Control spawns one per
relay on air (broadcaster/control/relays.py) and reads its stdout: frames of
one kind byte, a 4-byte big-endian length and the payload; ``A`` is 48 kHz mono
float32 audio in steady 100 ms chunks, ``E`` an event as JSON (``up``,
``down``, ``retry``, ``refused``, ``stats``). Blocking sockets, PyAV and an
upstream that misbehaves all live here, in a process of their own, so none of
it can hold control's reactor, let alone the audio loop.

Icecast/Shoutcast streams (Ogg, MP3, AAC) are read as they come; HLS playlists
(master or media; MPEG-TS, fMP4 or packed-AAC segments) are reloaded as RFC
8216 says, starting three segments from the live edge. Any failure is a
``down`` and a reconnect with backoff, for as long as the relay runs; only
what retrying cannot fix (RelayRefused: a private address, too many
redirects, a playlist or segment over its limit) ends the process.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from broadcaster.codecs.decoders import AvAudio, AvCodec, MpegAudioDecoder, OggDecoder, StreamDecoder, WebmDecoder
from broadcaster.codecs.pcm import SAMPLE_RATE, Audio
from broadcaster.core.lifetime import die_with_parent
from broadcaster.protocols.hls import MasterPlaylist, MediaPlaylist, PlaylistError, SegmentCursor, parse
from broadcaster.relay import fetch
from broadcaster.relay.fetch import Limits, RelayRefused, UpstreamError
from broadcaster.relay.pacer import Pacer

CHUNK_S = 0.1
HLS_TYPES = ("application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl")
MPEG_TYPES = ("audio/mpeg", "audio/mp3", "audio/x-mpeg", "audio/aac", "audio/aacp", "audio/x-aac")
NO_AUDIO_BYTES = 1 << 20  # a stream that decodes to nothing in its first MiB is not audio we can play
HEADER = struct.Struct(">cI")


@dataclass(frozen=True)
class Settings:
    url: str
    limits: Limits
    prime_s: float = 1.0
    max_buffer_s: float = 30.0
    backoff_min_s: float = 1.0
    backoff_max_s: float = 30.0
    stale_after_s: float = 15.0  # a live playlist with no new segment for this long is down

    @classmethod
    def from_json(cls, text: str) -> Settings:
        raw = json.loads(text)
        return cls(**{**raw, "limits": Limits(**raw["limits"])})


def stream_decoder(head: bytes, content_type: str) -> StreamDecoder:
    """The decoder for an Icecast/Shoutcast stream. A listener joins an MP3 or AAC mount at any
    byte, not at a frame: the MPEG framer finds the first frame and tells MP3 from ADTS by its
    header. Ogg (Icecast starts a listener on a page, headers first) and WebM are told by their
    magic."""
    if head.startswith(b"OggS"):
        return OggDecoder()
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return WebmDecoder()
    if content_type in MPEG_TYPES or any(head[at] == 0xFF and head[at + 1] & 0xE0 == 0xE0
                                         for at in range(len(head) - 1)):
        return MpegAudioDecoder()
    raise RelayRefused(f"the upstream sends {content_type or 'unrecognised bytes'}, not Ogg, MP3, AAC or HLS")


class SegmentDecoder:
    """HLS segments → PCM through one decoder kept across segments, so a segment boundary
    is not a decoder restart (AAC's priming would be a 21 ms dip every few seconds)."""

    def __init__(self) -> None:
        import av  # the worker pays for PyAV, control does not

        self._av = av
        self._codec: AvCodec | None = None
        self._codec_name = ""
        self._audio = AvAudio()

    def decode(self, data: bytes, init: bytes = b"") -> list[Audio]:
        av = self._av
        if data[:1] == b"\x47":
            fmt = "mpegts"
        elif data.startswith(b"ID3") or (len(data) >= 2 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0):
            fmt = "aac"  # packed audio (RFC 8216 3.4): ADTS frames behind an ID3 timestamp
        else:
            fmt, data = "mp4", init + data
        try:
            container = av.open(io.BytesIO(data), format=fmt)
        except av.error.FFmpegError as exc:
            raise UpstreamError(f"a segment is not {fmt}: {exc}") from None
        out: list[Audio] = []
        with container:
            streams = [s for s in container.streams if s.type == "audio"]
            if not streams:
                raise RelayRefused("the HLS segments carry no audio stream")
            stream = streams[0]
            name = stream.codec_context.name
            if self._codec is None or name != self._codec_name:
                self._codec = AvCodec(name, self._audio, stream.codec_context.extradata or None)
                self._codec_name = name
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        self._codec.decode(bytes(packet), out)  # a damaged packet is skipped
            except av.error.FFmpegError:
                pass  # a damaged tail: what decoded plays
        return out


class Relay:
    def __init__(self, settings: Settings, out: Any) -> None:
        self.settings = settings
        self.out = out
        self.pacer = Pacer(settings.prime_s, settings.max_buffer_s)
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.stopping = threading.Event()
        self.up = False
        self.bytes = 0
        self.high_water_s = max(settings.prime_s + 1.0, 0.8 * settings.max_buffer_s)

    # --- output ------------------------------------------------------------------------------

    def write(self, kind: bytes, payload: bytes) -> None:
        with self.write_lock:
            try:
                self.out.write(HEADER.pack(kind, len(payload)) + payload)
                self.out.flush()
            except (BrokenPipeError, ValueError):  # control went away: nothing left to relay for
                os._exit(0)

    def event(self, name: str, **fields: Any) -> None:
        self.write(b"E", json.dumps({"event": name, **fields}).encode())

    def audio(self, chunks: list[Audio]) -> None:
        if not chunks:
            return
        if not self.up:
            self.up = True
            self.event("up", url=self.settings.url)
        for pcm in chunks:
            # Back-pressure: an upstream faster than real time (a file on a CDN, an ended playlist)
            # waits here, in the fetch thread, rather than being decoded as fast as the network goes
            # and dropped.
            while self._full() and not self.stopping.wait(CHUNK_S):
                pass
            with self.lock:
                self.pacer.push(pcm)

    def _full(self) -> bool:
        with self.lock:
            return self.pacer.depth_s > self.high_water_s

    def play(self) -> None:
        """The pacing loop (main thread): a chunk every CHUNK_S on the monotonic clock."""
        count = int(CHUNK_S * SAMPLE_RATE)
        due = time.monotonic()
        stats_at = due + 1.0
        while not self.stopping.is_set():
            due += CHUNK_S
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -1.0:
                due = time.monotonic()  # we were stopped (SIGSTOP, a swap storm): start afresh
            with self.lock:
                pcm = self.pacer.take(count)
                depth, dropped, underruns = self.pacer.depth_s, self.pacer.dropped, self.pacer.underruns
            if pcm is not None:
                self.write(b"A", pcm.astype(np.float32, copy=False).tobytes())
            if due >= stats_at:
                stats_at = due + 1.0
                self.event("stats", buffer_s=round(depth, 2), bytes=self.bytes, dropped_s=dropped / SAMPLE_RATE,
                           underruns=underruns)

    # --- fetching ----------------------------------------------------------------------------

    def fetch_loop(self) -> None:
        backoff = self.settings.backoff_min_s
        while not self.stopping.is_set():
            try:
                self.once()
                reason = "the upstream ended its stream"
            except RelayRefused as exc:
                self.event("refused", reason=str(exc))
                self.stopping.set()
                return
            except (UpstreamError, PlaylistError) as exc:
                reason = str(exc)
            except Exception as exc:  # a decoder surprise must cost a reconnect, not the relay
                reason = f"{type(exc).__name__}: {exc}"
            if self.up:
                self.up = False
                backoff = self.settings.backoff_min_s
                self.event("down", reason=reason)
            else:
                self.event("retry", reason=reason, in_s=backoff)
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, self.settings.backoff_max_s)

    def once(self) -> None:
        limits = self.settings.limits
        response = fetch.get(self.settings.url, limits)
        first = b""
        while len(first) < 4096:  # enough to tell a playlist, an Ogg page or a frame sync
            data = response.read_some()
            if not data:
                break
            first += data
        if response.content_type in HLS_TYPES or first.lstrip().startswith(b"#EXTM3U"):
            rest = response.read_all(limits.max_playlist_bytes - len(first), "the playlist", limits.max_fetch_s)
            self.hls(response.url, (first + rest).decode("utf-8", "replace"))
        else:
            self.stream(response, first)

    def stream(self, response: fetch.Response, first: bytes) -> None:
        decoder = stream_decoder(first, response.content_type)
        data = first
        decoded = False
        try:
            while data and not self.stopping.is_set():
                self.bytes += len(data)
                chunks = decoder.feed(data)
                if chunks:
                    decoded = True
                    self.audio(chunks)
                elif not decoded and self.bytes > NO_AUDIO_BYTES:
                    raise RelayRefused(f"no audio decoded from the first {NO_AUDIO_BYTES} bytes of {response.url}")
                data = response.read_some()
        finally:
            response.close()

    def load(self, url: str) -> MasterPlaylist | MediaPlaylist:
        response = fetch.get(url, self.settings.limits)
        limits = self.settings.limits
        text = response.read_all(limits.max_playlist_bytes, "the playlist", limits.max_fetch_s)
        return parse(text.decode("utf-8", "replace"), response.url)

    def hls(self, url: str, text: str) -> None:
        playlist = parse(text, url)
        if isinstance(playlist, MasterPlaylist):
            url = playlist.choose()
            playlist = self.load(url)
            if isinstance(playlist, MasterPlaylist):
                raise RelayRefused(f"{url} is a master playlist inside a master playlist")
        cursor = SegmentCursor()
        decoder = SegmentDecoder()
        init_url, init = None, b""
        limit = self.settings.limits.max_segment_bytes
        last_new = time.monotonic()
        while not self.stopping.is_set():
            assert isinstance(playlist, MediaPlaylist)
            if playlist.init_url and playlist.init_url != init_url:
                init = fetch.get(playlist.init_url, self.settings.limits).read_all(limit, "the init segment",
                                                                                  self.settings.limits.max_fetch_s)
                init_url = playlist.init_url
            fresh = cursor.new(playlist)
            for segment in fresh:
                data = fetch.get(segment.url, self.settings.limits).read_all(limit, "a segment",
                                                                             self.settings.limits.max_fetch_s)
                self.bytes += len(data)
                self.audio(decoder.decode(data, init))
            now = time.monotonic()
            if fresh:
                last_new = now
            elif playlist.ended:
                return
            elif now - last_new > max(self.settings.stale_after_s, 3 * playlist.target_duration_s):
                raise UpstreamError(f"the playlist has had no new segment for {now - last_new:.0f} s")
            # RFC 8216 6.3.4: reload after a target duration, or half of one when nothing changed.
            target = max(0.5, playlist.target_duration_s)
            self.stopping.wait(target if fresh else target / 2)
            reloaded = self.load(url)
            if isinstance(reloaded, MasterPlaylist):
                raise RelayRefused(f"{url} turned into a master playlist")
            playlist = reloaded


def main(argv: list[str]) -> int:
    die_with_parent(os.getppid())
    os.nice(10)  # a relay's decoding gives way to the core and control: the audio loop never waits for it
    settings = Settings.from_json(argv[1])
    relay = Relay(settings, sys.stdout.buffer)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    fetcher = threading.Thread(target=relay.fetch_loop, name="relay-fetch", daemon=True)
    fetcher.start()
    relay.play()
    return 3  # refused: control reads the reason from the event


if __name__ == "__main__":
    sys.exit(main(sys.argv))
