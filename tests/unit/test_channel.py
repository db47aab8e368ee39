"""A channel on a fake clock: encode once, same bytes to every output, no work without consumers."""

from __future__ import annotations

from broadcaster.codecs.ogg import OggReader
from broadcaster.config import AudioConfig, HttpConfig
from broadcaster.core.channel import Channel
from broadcaster.core.clock import FrameClock
from broadcaster.core.commands import ChannelSpec, Event, Page
from broadcaster.core.sources.tone import ToneSource
from broadcaster.protocols.rtp import parse_rtp
from tests.conftest import RecordingSocket


def make_channel(addresses: list[tuple[str, int]],
                 keep_burst: bool = False) -> tuple[Channel, RecordingSocket, list[Event]]:
    sock, events = RecordingSocket(), []
    channel = Channel(ChannelSpec(id="ch", name="Kênh", zone="z"), AudioConfig(),
                      HttpConfig(page_ms=200, keep_burst=keep_burst), sock=sock, fanout="loop", emit=events.append)
    channel.by_kind["rtp"].set_addresses(addresses)
    return channel, sock, events


def pages(events: list[Event]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, Page) and e.data]


def test_with_keep_burst_a_channel_nobody_hears_keeps_its_recent_pages() -> None:
    channel, sock, events = make_channel([], keep_burst=True)
    channel.mixer.add(ToneSource(440.0))
    for tick in range(25):
        channel.tick(tick)
    assert sock.sent == [] and len(pages(events)) == 2, "pages for the burst, nothing sent to anyone"
    assert not any(isinstance(e, Page) and e.restart for e in events), "its burst is never forgotten"


def test_no_consumers_no_work_but_media_time_moves() -> None:
    channel, sock, events = make_channel([])
    tone = ToneSource(440.0, duration_s=1.0)
    channel.mixer.add(tone)
    start_ts = channel.packetizer.timestamp
    for tick in range(10):
        channel.tick(tick)
    assert sock.sent == [] and pages(events) == []
    assert channel.packetizer.timestamp == (start_ts + 10 * 960) % 2**32
    assert tone._position == 10 * 960


def test_one_encode_per_tick_same_packet_for_speakers_and_listeners() -> None:
    addresses = [("127.0.0.1", 1000 + i) for i in range(3)]
    channel, sock, events = make_channel(addresses)
    channel.by_kind["ogg"].set_listeners(2)
    channel.mixer.add(ToneSource(440.0))
    for tick in range(25):
        channel.tick(tick)
    assert len(sock.sent) == 75
    assert {a for _, a in sock.sent} == set(addresses)
    by_tick = [sock.sent[i * 3:(i + 1) * 3] for i in range(25)]
    assert all(len({d for d, _ in group}) == 1 for group in by_tick), "every loudspeaker gets the same bytes"
    packets = [parse_rtp(group[0][0]) for group in by_tick]
    assert [p.sequence for p in packets] == [(packets[0].sequence + i) % 65536 for i in range(25)]
    assert packets[0].marker and not packets[1].marker
    assert all(p.timestamp == (packets[0].timestamp + 960 * i) % 2**32 for i, p in enumerate(packets))
    assert len(pages(events)) == 2  # 200 ms pages: one page built for both listeners
    reader = OggReader()
    reader.feed(channel.by_kind["ogg"].header_pages + b"".join(pages(events)))
    ogg_packets = [packet for packet, page in reader.packets() if page.sequence >= 2]
    assert ogg_packets == [p.payload for p in packets[:20]], "the Ogg stream carries the very RTP payloads"


def test_silence_uses_the_cached_packet() -> None:
    channel, sock, _ = make_channel([("127.0.0.1", 9)])
    for tick in range(3):
        channel.tick(tick)
    assert {parse_rtp(d).payload for d, _ in sock.sent} == {channel.silence}


def test_going_idle_tells_control_to_forget_its_burst_at_once() -> None:
    channel, _, events = make_channel([])
    channel.by_kind["ogg"].set_listeners(1)
    channel.mixer.add(ToneSource(440.0))
    for tick in range(12):
        channel.tick(tick)  # one listener: a page of 200 ms has gone out
    assert [e.restart for e in events if isinstance(e, Page)] == [False]
    channel.by_kind["ogg"].set_listeners(0)
    channel.tick(12)  # nobody listens now
    restart = [e for e in events if isinstance(e, Page)][-1]
    assert restart.restart and restart.data == b"", "before the next listener arrives, not when it does"
    channel.tick(13)
    assert len([e for e in events if isinstance(e, Page)]) == 2, "said once, not every idle tick"


def test_skipped_ticks_advance_media_time() -> None:
    channel, sock, _ = make_channel([("127.0.0.1", 9)])
    tone = ToneSource(440.0)
    channel.mixer.add(tone)
    clock = FrameClock(0.02, max_catchup=2)
    clock.start(100.0)
    ran = []
    for now in (100.0, 100.02, 100.22):  # a stall before the last: 10 frames due, 2 run, 8 skipped
        for tick, _deadline in clock.due(now):
            channel.tick(tick)
            ran.append(tick)
    first, *_, last = [parse_rtp(d) for d, _ in sock.sent]
    elapsed_samples = (last.timestamp - first.timestamp) % 2**32
    assert clock.missed == 8 and ran == [0, 1, 10, 11]
    assert elapsed_samples == 960 * 11
    assert (last.sequence - first.sequence) % 65536 == len(sock.sent) - 1
    assert tone._position == 960 * 12, "the programme skipped ahead with the clock"


def test_the_level_is_the_mixed_audios_rms_and_loudest_frame_since_the_last_status() -> None:
    channel, _, _ = make_channel([("127.0.0.1", 1000)])
    channel.mixer.add(ToneSource(440.0, level_dbfs=-9.0))
    for tick in range(50):
        channel.tick(tick)
    level = channel.status()["level"]
    # A sine at -9 dBFS RMS: every frame is as loud as the whole.
    assert abs(level["rms_dbfs"] - -9.0) < 0.3 and abs(level["peak_dbfs"] - level["rms_dbfs"]) < 0.3
    for tick in range(50, 60):
        channel.tick(tick)  # the tone goes on: the count starts again from the last status()
    assert abs(channel.level()["rms_dbfs"] - -9.0) < 0.3
    assert channel.level() == {"rms_dbfs": None, "peak_dbfs": None}, "nothing mixed since: no reading"


def test_silence_reads_the_floor_and_a_channel_nobody_needs_has_no_level() -> None:
    channel, _, _ = make_channel([("127.0.0.1", 1000)])
    for tick in range(10):
        channel.tick(tick)
    assert channel.level() == {"rms_dbfs": -96.0, "peak_dbfs": -96.0}
    idle, _, _ = make_channel([])
    idle.mixer.add(ToneSource(440.0))
    for tick in range(10):
        idle.tick(tick)
    assert idle.level() == {"rms_dbfs": None, "peak_dbfs": None}
