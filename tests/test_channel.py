"""A channel on a fake clock: encode once, same bytes to everyone, no work without consumers."""

from __future__ import annotations

from twisted.internet.task import Clock

from broadcaster.codecs.ogg import OggReader
from broadcaster.config import AudioConfig, ChannelConfig, HttpConfig
from broadcaster.core.channel import Channel
from broadcaster.core.clock import FrameClock
from broadcaster.core.sources import ToneSource
from broadcaster.protocols.rtp import parse_rtp


class RecordingFanout:
    def __init__(self, n: int = 0) -> None:
        self.n = n
        self.packets: list[bytes] = []

    def set_targets(self, addresses: list[tuple[str, int]]) -> None:
        self.n = len(addresses)

    def send(self, packet: bytes) -> tuple[int, int]:
        self.packets.append(packet)
        return self.n, 0

    def __len__(self) -> int:
        return self.n


class RecordingListener:
    def __init__(self) -> None:
        self.pages: list[bytes] = []

    def write_page(self, page: bytes) -> None:
        self.pages.append(page)


def make_channel(addresses: list[tuple[str, int]]) -> tuple[Channel, RecordingFanout]:
    fanout = RecordingFanout()
    channel = Channel(ChannelConfig(id="ch", name="Kênh", zone="z"), AudioConfig(), HttpConfig(page_ms=200),
                      fanout, speaker_addresses=lambda: list(addresses))
    return channel, fanout


def test_no_consumers_no_work_but_media_time_moves() -> None:
    channel, fanout = make_channel([])
    tone = ToneSource(440.0, duration_s=1.0)
    channel.mixer.add(tone)
    start_ts = channel.packetizer.timestamp
    for tick in range(10):
        channel.tick(tick, tick * 0.02)
    assert fanout.packets == []
    assert channel.packetizer.timestamp == (start_ts + 10 * 960) % 2**32


def test_one_encode_per_tick_same_packet_for_speakers_and_listeners() -> None:
    addresses = [("127.0.0.1", 1000 + i) for i in range(3)]
    channel, fanout = make_channel(addresses)
    channel.speakers_changed()
    a, b = RecordingListener(), RecordingListener()
    channel.add_listener(a)
    channel.add_listener(b)
    channel.mixer.add(ToneSource(440.0))
    for tick in range(25):
        channel.tick(tick, tick * 0.02)
    assert len(fanout) == 3 and len(fanout.packets) == 25
    packets = [parse_rtp(p) for p in fanout.packets]
    assert [p.sequence for p in packets] == [(packets[0].sequence + i) % 65536 for i in range(25)]
    assert packets[0].marker and not packets[1].marker
    assert all(p.timestamp == (packets[0].timestamp + 960 * i) % 2**32 for i, p in enumerate(packets))
    assert a.pages == b.pages and len(a.pages) == 2  # 200 ms pages
    reader = OggReader()
    reader.feed(channel.ogg.header_pages + b"".join(a.pages))
    ogg_packets = [packet for packet, page in reader.packets() if page.sequence >= 2]
    assert ogg_packets == [p.payload for p in packets[:20]], "the Ogg stream carries the very RTP payloads"


def test_silence_uses_the_cached_packet() -> None:
    channel, fanout = make_channel([("127.0.0.1", 9)])
    channel.speakers_changed()
    for tick in range(3):
        channel.tick(tick, 0.0)
    assert {parse_rtp(p).payload for p in fanout.packets} == {channel.silence}


def test_skipped_ticks_advance_media_time() -> None:
    channel, fanout = make_channel([("127.0.0.1", 9)])
    channel.speakers_changed()
    tone = ToneSource(440.0)
    channel.mixer.add(tone)
    reactor = Clock()
    clock = FrameClock(reactor, 0.02, max_catchup=2)
    clock.add_handler(channel.tick)
    clock.start()
    reactor.advance(0)
    reactor.advance(0.02)
    reactor.advance(0.2)  # a stall: 10 frames due, 2 run, 8 skipped
    first, *_, last = [parse_rtp(p) for p in fanout.packets]
    elapsed_samples = (last.timestamp - first.timestamp) % 2**32
    assert clock.missed == 8
    assert elapsed_samples == 960 * clock.tick_index - 960
    assert (last.sequence - first.sequence) % 65536 == len(fanout.packets) - 1
    assert tone._position == 960 * clock.tick_index, "the programme skipped ahead with the clock"
