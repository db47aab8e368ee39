"""A title change as a new Ogg chain, on a fake clock: at a page boundary, at most one a page,
the old chain ended by EOS, the new one's headers carrying TITLE=; control's burst starts with
the current chain's headers; ffmpeg decodes across the boundary and reads the new title."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from broadcaster.codecs.ogg import OggReader, parse_opus_tags
from broadcaster.config import AudioConfig, ChannelConfig, HttpConfig
from broadcaster.control.channels import ChannelView
from broadcaster.core import commands as c
from broadcaster.core.channel import Channel
from broadcaster.core.sources.tone import ToneSource
from tests.conftest import RecordingSocket


def make_channel(keep_burst: bool = True) -> tuple[Channel, list[c.Event]]:
    events: list[c.Event] = []
    channel = Channel(c.ChannelSpec(id="ch", name="Xã An Bình", zone="z"), AudioConfig(),
                      HttpConfig(page_ms=200, keep_burst=keep_burst), sock=RecordingSocket(), fanout="loop",
                      emit=events.append)
    channel.mixer.add(ToneSource(440.0))
    return channel, events


def chains(stream: bytes) -> list[tuple[int, list[str], int, bool]]:
    """(serial, comments, audio packets, ended with EOS) per logical stream, in order."""
    reader = OggReader()
    reader.feed(stream)
    found: dict[int, list[object]] = {}
    for packet, page in reader.packets():
        entry = found.setdefault(page.serial, [[], 0, False])
        if packet.startswith(b"OpusTags"):
            entry[0] = parse_opus_tags(packet)[1]
        elif not packet.startswith(b"OpusHead"):
            entry[1] = int(entry[1]) + (1 if page.sequence >= 2 else 0)
    pages = OggReader()
    pages.feed(stream)
    for page in pages.pages():
        found[page.serial][2] = page.eos
    return [(serial, list(e[0]), int(e[1]), bool(e[2])) for serial, e in found.items()]  # type: ignore[call-overload]


def test_a_title_starts_a_new_chain_at_the_next_page_and_a_flood_makes_one() -> None:
    channel, events = make_channel()
    ogg = channel.by_kind["ogg"]
    stream = ogg.header_pages
    for tick in range(5):  # half a page
        channel.tick(tick)
    for n in range(50):  # a flood of updates within one page: the last one wins
        ogg.set_title(f"Bản tin {n}", "Đài xã")
    for tick in range(5, 40):
        channel.tick(tick)
    pages = [e for e in events if isinstance(e, c.Page)]
    assert len(pages) == 4 and [bool(p.headers) for p in pages] == [True, False, False, False]
    stream += b"".join(p.data for p in pages)
    (first, tags0, audio0, eos0), (second, tags1, audio1, eos1) = chains(stream)
    assert first != second and eos0 and not eos1
    assert tags0 == ["TITLE=Xã An Bình", "CHANNEL=ch"]
    assert tags1 == ["TITLE=Bản tin 49", "ARTIST=Đài xã", "CHANNEL=ch", "ORGANIZATION=Xã An Bình"]
    assert audio0 == 10 and audio1 == 30, "no packet lost or repeated at the boundary"
    assert pages[0].headers == ogg.header_pages


def test_the_same_title_again_makes_no_chain_and_clearing_returns_to_the_name() -> None:
    channel, events = make_channel()
    ogg = channel.by_kind["ogg"]
    ogg.set_title("A")
    for tick in range(10):
        channel.tick(tick)
    ogg.set_title("A")
    for tick in range(10, 20):
        channel.tick(tick)
    ogg.set_title(None)
    for tick in range(20, 30):
        channel.tick(tick)
    headers = [e.headers for e in events if isinstance(e, c.Page) and e.headers]
    assert len(headers) == 2
    assert [chains(h)[0][1][0] for h in headers] == ["TITLE=A", "TITLE=Xã An Bình"]


def test_an_idle_channel_changes_title_at_once_for_the_next_listener() -> None:
    channel, events = make_channel(keep_burst=False)
    channel.tick(0)  # nobody listens: idle
    channel.by_kind["ogg"].set_title("Tin sáng")
    last = events[-1]
    assert isinstance(last, c.Page) and last.restart and last.data == b""
    assert chains(last.headers)[0][1][0] == "TITLE=Tin sáng"


def test_a_title_waiting_when_the_channel_goes_idle_applies_then() -> None:
    channel, events = make_channel(keep_burst=False)
    ogg = channel.by_kind["ogg"]
    ogg.set_listeners(1)
    channel.tick(0)
    ogg.set_title("Tin trưa")
    ogg.set_listeners(0)
    channel.tick(1)  # idle before the page was full
    headers = [e.headers for e in events if isinstance(e, c.Page) and e.headers]
    assert len(headers) == 1 and chains(headers[0])[0][1][0] == "TITLE=Tin trưa"
    assert ogg.header_pages == headers[0]


def test_a_title_no_ogg_header_can_carry_leaves_the_stream_as_it_was() -> None:
    channel, events = make_channel()
    ogg = channel.by_kind["ogg"]
    before = ogg.header_pages
    ogg.set_title("x" * 70_000)  # control cuts titles at 512 bytes; the core must survive one anyway
    for tick in range(30):
        channel.tick(tick)
    pages = [e for e in events if isinstance(e, c.Page)]
    assert len(pages) == 3 and not any(p.headers for p in pages) and ogg.header_pages == before
    assert len(chains(before + b"".join(p.data for p in pages))) == 1


class Listener:
    def __init__(self) -> None:
        self.data = b""

    def write_page(self, page: bytes, chunk: bytes | None = None) -> None:
        self.data += page


def view() -> tuple[ChannelView, list[c.Command]]:
    sent: list[c.Command] = []
    config = ChannelConfig(id="ch", name="Xã An Bình", zone="z")
    return ChannelView(config, burst_pages=3, send=sent.append, clock=lambda: 100.0), sent


def test_control_keeps_a_burst_that_starts_with_the_current_chain() -> None:
    channel, events = make_channel()
    ogg = channel.by_kind["ogg"]
    control, sent = view()
    control.header_pages = ogg.header_pages
    listener = Listener()
    listener.data = control.stream_start()
    control.add_listener(listener)
    for tick in range(20):
        channel.tick(tick)
    control.set_title("Tin sáng", "UBND xã")
    assert control.title == "UBND xã - Tin sáng"
    assert sent[-1] == c.SetTitle("ch", "Tin sáng", "UBND xã")
    command = sent[-1]
    assert isinstance(command, c.SetTitle)
    ogg.set_title(command.title, command.artist)  # what the core does with it
    for tick in range(20, 60):
        channel.tick(tick)
    for event in events:
        assert isinstance(event, c.Page)
        control.page(event)
    late = control.stream_start()
    assert late.startswith(ogg.header_pages)
    (only,) = chains(late)
    assert only[1][0] == "TITLE=Tin sáng" and only[2] == 30, "the new chain's headers, then its 3 pages (30 packets)"
    titles = [tags[0] for _, tags, _, _ in chains(listener.data)]
    assert titles == ["TITLE=Xã An Bình", "TITLE=Tin sáng"], "the listener already there saw the change"


def test_the_title_is_cleared_when_the_live_session_ends() -> None:
    control, sent = view()
    control.live = object()
    control.set_title("Tin sáng")
    control.live = None
    assert control.title is None and sent[-1] == c.SetTitle("ch", None, None)


def test_listeners_get_ids_and_join_times_for_listclients() -> None:
    control, _ = view()
    first, second = Listener(), Listener()
    control.add_listener(first)
    control.add_listener(second)
    (id1, at1), (id2, _) = control.joined[first], control.joined[second]
    assert id2 > id1 and at1 == 100.0
    control.remove_listener(first)
    assert list(control.joined) == [second]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_ffmpeg_decodes_across_the_chain_and_reads_the_new_title(tmp_path: Path) -> None:
    channel, events = make_channel()
    ogg = channel.by_kind["ogg"]
    stream = ogg.header_pages
    for tick in range(100):
        if tick == 40:
            ogg.set_title("Bản tin trưa", "Đài xã")
        channel.tick(tick)
    stream += b"".join(e.data for e in events if isinstance(e, c.Page))
    path = tmp_path / "chained.ogg"
    path.write_bytes(stream)
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "48000",
                              "-"], capture_output=True, timeout=60)
    assert decoded.returncode == 0 and decoded.stderr == b"", decoded.stderr.decode()
    assert len(decoded.stdout) // 2 >= 48000 * 1.9, "all but the pre-skips of two seconds of audio"
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_packets", "-show_entries", "stream_tags", "-of", "json",
                            str(path)], capture_output=True, timeout=60)
    tags = json.loads(probe.stdout)["streams"][0]["tags"]
    # ffmpeg's Ogg demuxer reads each chain's OpusTags as it comes and appends repeated keys.
    assert tags["TITLE"].split(";") == ["Xã An Bình", "Bản tin trưa"] and tags["ARTIST"] == "Đài xã"
