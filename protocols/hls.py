"""HLS playlists (RFC 8216) as a relay reads them: which variant, which segments next.

Pure: text in, plain values out. National radio (VOV on Wowza) publishes a
master ``playlist.m3u8`` naming one or more ``chunklist`` media playlists;
provincial stations often give the media playlist directly. A relay wants one
audio rendition, the segments it has not fetched yet, and to notice when the
upstream restarted (its media sequence went backwards) or ended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin

MAX_SEGMENTS = 10_000  # a playlist listing more than this is refused, not parsed further
_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


class PlaylistError(ValueError):
    """Not an HLS playlist a relay can play (the message says why)."""


@dataclass(frozen=True)
class Variant:
    url: str
    bandwidth: int
    codecs: str
    audio_only: bool


@dataclass(frozen=True)
class Segment:
    sequence: int
    url: str
    duration_s: float
    discontinuity: bool = False


@dataclass(frozen=True)
class MediaPlaylist:
    target_duration_s: float
    media_sequence: int
    segments: tuple[Segment, ...]
    ended: bool
    init_url: str | None = None  # EXT-X-MAP: the fMP4 initialisation segment


@dataclass(frozen=True)
class MasterPlaylist:
    variants: tuple[Variant, ...] = field(default_factory=tuple)
    audio_urls: tuple[str, ...] = ()  # EXT-X-MEDIA TYPE=AUDIO renditions with a URI

    def choose(self) -> str:
        """The audio to relay: an audio-only rendition or variant if there is one (no video
        bytes fetched for nothing), else the lowest bandwidth variant (its audio is the same)."""
        if self.audio_urls:
            return self.audio_urls[0]
        if not self.variants:
            raise PlaylistError("the master playlist names no variant")
        audio = [v for v in self.variants if v.audio_only]
        return min(audio or self.variants, key=lambda v: v.bandwidth).url


def attributes(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTRIBUTE.findall(text)}


def parse(text: str, base_url: str) -> MasterPlaylist | MediaPlaylist:
    """A master or a media playlist, with every URL made absolute against ``base_url``."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines or not lines[0].startswith("#EXTM3U"):
        raise PlaylistError("not an HLS playlist (it does not start with #EXTM3U)")
    if any(line.startswith("#EXT-X-STREAM-INF") for line in lines):
        return _master(lines, base_url)
    return _media(lines, base_url)


def _master(lines: list[str], base_url: str) -> MasterPlaylist:
    variants: list[Variant] = []
    audio: list[str] = []
    pending: dict[str, str] | None = None
    for line in lines:
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = attributes(line.partition(":")[2])
        elif line.startswith("#EXT-X-MEDIA:"):
            media = attributes(line.partition(":")[2])
            if media.get("TYPE") == "AUDIO" and media.get("URI"):
                audio.append(urljoin(base_url, media["URI"]))
        elif not line.startswith("#") and pending is not None:
            codecs = pending.get("CODECS", "")
            video = "RESOLUTION" in pending or any(c.strip().startswith(("avc", "hvc", "hev", "vp0", "av01"))
                                                   for c in codecs.split(","))
            try:
                bandwidth = int(pending.get("BANDWIDTH", "0"))
            except ValueError:
                bandwidth = 0
            variants.append(Variant(urljoin(base_url, line), bandwidth, codecs, not video))
            pending = None
        if len(variants) > MAX_SEGMENTS:
            raise PlaylistError(f"the master playlist names more than {MAX_SEGMENTS} variants")
    return MasterPlaylist(tuple(variants), tuple(audio))


def _media(lines: list[str], base_url: str) -> MediaPlaylist:
    target = 0.0
    sequence = 0
    segments: list[Segment] = []
    duration: float | None = None
    discontinuity = False
    ended = False
    init: str | None = None
    for line in lines[1:]:
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-TARGETDURATION":
            target = _number(value, tag)
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            sequence = int(_number(value, tag))
        elif tag == "#EXTINF":
            duration = _number(value.split(",", 1)[0], tag)
        elif tag == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif tag == "#EXT-X-ENDLIST":
            ended = True
        elif tag == "#EXT-X-MAP":
            uri = attributes(value).get("URI")
            if uri:
                init = urljoin(base_url, uri)
        elif tag == "#EXT-X-KEY" and attributes(value).get("METHOD", "NONE") != "NONE":
            raise PlaylistError("the playlist is encrypted (EXT-X-KEY); a relay plays clear streams only")
        elif not line.startswith("#"):
            if duration is None:
                raise PlaylistError(f"segment {line[:60]!r} has no #EXTINF before it")
            segments.append(Segment(sequence + len(segments), urljoin(base_url, line), duration, discontinuity))
            if len(segments) > MAX_SEGMENTS:
                raise PlaylistError(f"the playlist lists more than {MAX_SEGMENTS} segments")
            duration, discontinuity = None, False
    if target <= 0:
        target = max((s.duration_s for s in segments), default=0.0)
    if not segments and not ended:
        raise PlaylistError("the media playlist lists no segment")
    return MediaPlaylist(target, sequence, tuple(segments), ended, init)


def _number(value: str, tag: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise PlaylistError(f"{tag}: {value[:30]!r} is not a number") from None
    if not 0 <= number < 1e12:
        raise PlaylistError(f"{tag}: {value[:30]!r} is out of range")
    return number


class SegmentCursor:
    """Which segments of successive reloads of a live media playlist are new.

    Starts near the live edge (``start_segments`` from the end, as players do,
    so the relay is close to live but has some segments buffered), then yields
    each segment once in order. A media sequence that goes backwards means the
    upstream encoder restarted: start again from its live edge."""

    def __init__(self, start_segments: int = 3) -> None:
        self.start_segments = start_segments
        self.next_sequence: int | None = None
        self.restarts = 0

    def new(self, playlist: MediaPlaylist) -> list[Segment]:
        segments = list(playlist.segments)
        if not segments:
            return []
        first, last = segments[0].sequence, segments[-1].sequence
        if self.next_sequence is not None and (self.next_sequence < first - 1 or self.next_sequence > last + 1):
            # Behind the window (we fell far behind) or past its end (the sequence restarted).
            if self.next_sequence > last + 1:
                self.restarts += 1
            self.next_sequence = None
        if self.next_sequence is None:
            fresh = segments[-self.start_segments:] if not playlist.ended else segments
        else:
            fresh = [s for s in segments if s.sequence >= self.next_sequence]
        if fresh:
            self.next_sequence = fresh[-1].sequence + 1
        return fresh
