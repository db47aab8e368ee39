"""HLS: the MPEG-TS packetizer, the rolling window, and a channel's encoder on a fake clock.

The segments are read back by PyAV (ffmpeg's demuxer and decoder), not by a
parser of ours, so a packetizer bug that only we would accept fails here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from broadcaster import metrics
from broadcaster.codecs.encoders import AacEncoder
from broadcaster.codecs.fmp4 import init_segment
from broadcaster.codecs.mpegts import PACKET, PAT_SECTION, PMT_SECTION, TsWriter, adts_header, crc32_mpeg
from broadcaster.codecs.ogg import OggOpusWriter
from broadcaster.codecs.opus import OpusEncoder
from broadcaster.codecs.pcm import dominant_frequency, rms_dbfs
from broadcaster.config import ChannelConfig, ConfigError, HlsConfig, load_config
from broadcaster.control.channels import ChannelView
from broadcaster.control.hls import HlsChannel, HlsDesk, HlsWindow, Segmenter
from broadcaster.core import commands as c

RATE = 48000


def tone(seconds: float, frequency_hz: float = 440.0, level_dbfs: float = -12.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (10 ** (level_dbfs / 20) * np.sqrt(2) * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


def ogg_pages(seconds: int, frequency_hz: float = 440.0) -> tuple[bytes, list[bytes]]:
    """Header pages and one-second audio pages, as the core's Ogg output makes them."""
    encoder = OpusEncoder()
    writer = OggOpusWriter(serial=7, pre_skip=encoder.lookahead, page_samples=RATE)
    pages = []
    pcm = tone(seconds, frequency_hz)
    for start in range(0, pcm.size, 960):
        page = writer.add_packet(encoder.encode(pcm[start:start + 960]), 960)
        if page:
            pages.append(page)
    return writer.header_pages, pages


def decode_ts(data: bytes) -> tuple[np.ndarray, Any]:
    with av.open(io.BytesIO(data), format="mpegts") as container:
        stream = container.streams.audio[0]
        codec = (stream.codec_context.name, stream.codec_context.profile, stream.codec_context.sample_rate)
        audio = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
    return np.concatenate(audio), codec


# --- the packetizer -------------------------------------------------------------------

def test_crc_and_sections() -> None:
    assert crc32_mpeg(b"123456789") == 0x0376E6E7  # the CRC-32/MPEG-2 check value
    assert crc32_mpeg(PAT_SECTION) == 0 and crc32_mpeg(PMT_SECTION) == 0  # a section with its CRC checks to 0


def test_adts_header_fields() -> None:
    header = adts_header(100)
    assert header[:2] == b"\xff\xf1" and len(header) == 7
    assert (header[2] >> 6) == 1 and (header[2] >> 2) & 0xF == 3  # AAC-LC, 48 kHz
    assert ((header[3] & 3) << 11 | header[4] << 3 | header[5] >> 5) == 107
    with pytest.raises(ValueError):
        adts_header(9000)


def test_segments_are_whole_packets_with_psi_first_and_continuity_across_segments() -> None:
    aac = AacEncoder(64000)
    frames = aac.encode(tone(4.5))
    writer = TsWriter()
    first, second = writer.segment(frames[:94], 0), writer.segment(frames[94:188], 94 * 1024)
    counters: dict[int, int] = {}
    for segment in (first, second):
        assert len(segment) % PACKET == 0
        packets = [segment[i:i + PACKET] for i in range(0, len(segment), PACKET)]
        assert all(p[0] == 0x47 for p in packets)
        pids = [((p[1] & 0x1F) << 8) | p[2] for p in packets]
        assert pids[:2] == [0, 0x1000], "each segment starts with a PAT and a PMT"
        for packet, pid in zip(packets, pids, strict=True):
            cc = packet[3] & 0x0F
            if pid in counters:
                assert cc == (counters[pid] + 1) & 0x0F, "continuity counters carry on across segments"
            counters[pid] = cc


def test_segments_decode_back_to_the_tone_with_running_timestamps() -> None:
    aac = AacEncoder(64000)
    frames = aac.encode(tone(5.0))
    writer = TsWriter()
    first, second = writer.segment(frames[:94], 0), writer.segment(frames[94:188], 94 * 1024)
    audio, codec = decode_ts(first + second)
    assert codec == ("aac", "LC", RATE)
    assert audio.size >= 187 * 1024
    steady = audio[RATE:]
    assert abs(dominant_frequency(steady) - 440.0) < 2.0
    assert abs(rms_dbfs(steady) - (-12.0)) < 1.0
    with av.open(io.BytesIO(second), format="mpegts") as container:
        packet = next(p for p in container.demux(container.streams.audio[0]) if p.pts is not None)
        assert packet.pts == 10 * 90000 + 94 * 1024 * 90000 // RATE  # it starts where the first ended


def test_fmp4_init_and_fragments_decode_back_to_the_tone() -> None:
    segmenter = Segmenter(2, 64000, "fmp4")
    _, pages = ogg_pages(5)
    segments = [data for page in pages for _, data in segmenter.feed(page)]
    assert len(segments) == 2
    init = init_segment(RATE, 1, 64000)
    assert init[4:8] == b"ftyp" and segments[0][4:8] == b"moof"
    with av.open(io.BytesIO(init + segments[0] + segments[1]), format="mp4") as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.codec_context.profile, stream.rate) == ("aac", "LC", RATE)
        frames = list(container.decode(stream))
    assert frames[0].pts == 0 and frames[-1].pts == (2 * 94 - 1) * 1024  # tfdt: the second runs on from the first
    audio = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    steady = audio[RATE:]
    assert abs(dominant_frequency(steady) - 440.0) < 2.0
    assert abs(rms_dbfs(steady) - (-12.0)) < 1.0


def test_an_fmp4_playlist_names_its_init_segment() -> None:
    window = HlsWindow(segment_s=2, window=3, first_sequence=5, session="s", init=b"init")
    window.add(2.005, b"frag")
    lines = window.playlist("p/").splitlines()
    assert lines[1] == "#EXT-X-VERSION:7" and lines[4] == '#EXT-X-MAP:URI="p/s-init.mp4"'
    assert lines[-1] == "p/s-5.m4s"
    assert window.get("s-init.mp4").data == b"init"  # type: ignore[union-attr]


# --- the window -----------------------------------------------------------------------

def test_playlist_lists_the_last_window_and_keeps_a_few_more() -> None:
    window = HlsWindow(segment_s=4, window=3, first_sequence=100, session="abc")
    assert not window.ready
    for _ in range(12):
        window.add(4.011, b"ts")
    text = window.playlist("ch-a/hls/")
    lines = text.splitlines()
    assert lines[:4] == ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:4", "#EXT-X-MEDIA-SEQUENCE:109"]
    assert lines[4:] == ["#EXTINF:4.011,", "ch-a/hls/abc-109.ts", "#EXTINF:4.011,", "ch-a/hls/abc-110.ts",
                         "#EXTINF:4.011,", "ch-a/hls/abc-111.ts"]
    assert "#EXT-X-ENDLIST" not in text  # live
    assert window.get("abc-111.ts") is not None and window.get("abc-103.ts") is not None  # kept past the list
    assert window.get("abc-102.ts") is None and window.get("abc-999.ts") is None


# --- one channel's encoder: started by a request, stopped when nobody asks ----------------

class Recorder:
    def __init__(self) -> None:
        self.sent: list[c.Command] = []

    def __call__(self, command: c.Command) -> None:
        self.sent.append(command)

    def listeners(self) -> list[int]:
        return [command.count for command in self.sent if isinstance(command, c.SetListeners)]


def inline(work: Any, data: bytes) -> Deferred[Any]:
    return maybeDeferred(work, data)


def make_channel(burst: list[bytes] | None = None) -> tuple[ChannelView, Recorder, bytes, list[bytes]]:
    sent = Recorder()
    view = ChannelView(ChannelConfig(id="ch-a", name="A", zone="z"), 10, sent)
    headers, pages = ogg_pages(12)
    view.header_pages = headers
    view.rtp = {"ssrc": 1}
    for page in burst or []:
        view.page(c.Page("ch-a", page))
    return view, sent, headers, pages


def test_a_playlist_request_starts_the_encoder_and_waits_for_the_first_segment() -> None:
    clock = Clock()
    view, sent, _, pages = make_channel()
    config = HlsConfig(segment_s=2, window=3, idle_s=30.0, first_segment_wait_s=10.0)
    desk = HlsDesk(config, inline, clock, wall=lambda: 1_000_000.0)
    hls = desk.of(view)
    got: list[HlsWindow | None] = []
    hls.ready_window().addCallback(got.append)
    assert hls.running and sent.listeners() == [1], "the tap counts as a listener: the core encodes"
    assert got == []
    for page in pages[:3]:  # three seconds of audio: one 2 s segment
        view.page(c.Page("ch-a", page))
    assert len(got) == 1 and got[0] is not None
    lines = got[0].playlist().splitlines()
    assert lines[3] == "#EXT-X-MEDIA-SEQUENCE:500000"  # from the wall clock: never reused after a restart
    assert lines[4] == "#EXTINF:2.005,"
    audio, _ = decode_ts(got[0].get(lines[5]).data)  # type: ignore[union-attr]
    assert abs(dominant_frequency(audio[4800:]) - 440.0) < 2.0


def test_the_encoder_stops_after_idle_s_without_requests_and_forgets_its_segments() -> None:
    clock = Clock()
    view, sent, _, pages = make_channel()
    config = HlsConfig(segment_s=2, window=3, idle_s=30.0, first_segment_wait_s=10.0)
    desk = HlsDesk(config, inline, clock, wall=lambda: 0.0)
    hls = desk.of(view)
    hls.ready_window()
    for page in pages[:5]:
        view.page(c.Page("ch-a", page))
    assert hls.window is not None
    name = hls.window.playlist().splitlines()[5]
    running = metrics.transcoders.labels("hls")._value.get()
    clock.advance(20)
    assert hls.segment(name) is not None  # a segment request (a CDN) keeps it running
    clock.advance(29)
    assert hls.running
    clock.advance(1)
    assert not hls.running and view.taps == set()
    assert sent.listeners() == [1, 0], "the core is told nobody needs the pages any more"
    assert metrics.transcoders.labels("hls")._value.get() == running - 1
    assert hls.segment(name) is None  # expired: 404
    view.page(c.Page("ch-a", pages[5]))  # pages after the stop are not encoded


def test_a_waiting_request_keeps_the_encoder_running() -> None:
    clock = Clock()
    view, _, _, pages = make_channel()
    desk = HlsDesk(HlsConfig(segment_s=4, idle_s=3.0, first_segment_wait_s=10.0), inline, clock, wall=lambda: 0.0)
    hls = desk.of(view)
    got: list[HlsWindow | None] = []
    hls.ready_window().addCallback(got.append)
    for page in pages[:4]:  # a page a second, as the core sends them; idle_s passes meanwhile
        clock.advance(1)
        view.page(c.Page("ch-a", page))
    assert hls.running and got == []
    clock.advance(1)
    view.page(c.Page("ch-a", pages[4]))
    assert got and got[0] is not None
    clock.advance(2)
    assert hls.running, "idle counts from the answer, not from the request"
    clock.advance(1)
    assert not hls.running


def test_the_burst_makes_segments_at_once_and_a_cold_wait_gives_up() -> None:
    clock = Clock()
    _, _, _, pages = make_channel()
    view, _, _, _ = make_channel(burst=pages[:9])
    config = HlsConfig(segment_s=4, window=6, idle_s=30.0, first_segment_wait_s=5.0)
    hls = HlsChannel(view, config, inline, clock, wall=lambda: 0.0)
    got: list[HlsWindow | None] = []
    hls.ready_window().addCallback(got.append)
    assert got and got[0] is not None and got[0].playlist().count("#EXTINF") == 2  # 9 s of burst: two segments

    cold, _, _, _ = make_channel()
    waiting = HlsChannel(cold, config, inline, clock, wall=lambda: 0.0)
    late: list[HlsWindow | None] = []
    waiting.ready_window().addCallback(late.append)
    clock.advance(5)
    assert late == [None], "no segment in time: the request is answered (503), not held"


# --- configuration ----------------------------------------------------------------------

MINIMAL = """
zones: [{id: p, children: [{id: c1, children: [{id: h1, kind: hamlet}]}]}]
channels: [{id: ch1, zone: c1}]
"""


def test_hls_and_mp3_sections(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    config = load_config(path)
    assert (config.hls.segment_s, config.hls.window, config.mp3.metaint) == (4, 6, 16000)
    path.write_text(MINIMAL + "hls: {segment_s: 2, idle_s: 5}\nmp3: {bitrate: 128000, metaint: 8192}\n",
                    encoding="utf-8")
    config = load_config(path)
    assert (config.hls.segment_s, config.hls.idle_s, config.mp3.bitrate, config.mp3.metaint) == (2, 5.0, 128000, 8192)
    for bad, key in (("hls: {segment_s: 10}", "hls.segment_s"), ("hls: {container: webm}", "hls.container"),
                     ("mp3: {metaint: 0}", "mp3.metaint")):
        path.write_text(MINIMAL + bad + "\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.key == key
