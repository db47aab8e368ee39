"""HLS playlists as a relay reads them (protocols/hls.py), and the relay's playout buffer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.codecs.pcm import SAMPLE_RATE
from broadcaster.protocols.hls import MasterPlaylist, MediaPlaylist, PlaylistError, SegmentCursor, parse
from broadcaster.relay.pacer import Pacer
from tests.unit.test_fuzz import budget

# What Wowza serves for VOV: a master naming one chunklist, relative URLs with a session id.
MASTER = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS="mp4a.40.2"
chunklist_w1234.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=32000,CODECS="mp4a.40.5"
low/chunklist_w1234.m3u8
"""
VIDEO_MASTER = """#EXTM3U
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS="avc1.4d401e,mp4a.40.2"
video.m3u8
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",NAME="radio",URI="audio/only.m3u8"
"""


def media(first: int, count: int, ended: bool = False, duration: float = 4.0) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{int(duration)}",
             f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for n in range(first, first + count):
        lines += [f"#EXTINF:{duration:.3f},", f"media_{n}.ts"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def test_master_playlist_chooses_the_lowest_audio_variant_with_absolute_urls() -> None:
    playlist = parse(MASTER, "https://str.vov.gov.vn/vovlive/vov1vov5vietnam.sdp/playlist.m3u8")
    assert isinstance(playlist, MasterPlaylist)
    assert playlist.choose() == "https://str.vov.gov.vn/vovlive/vov1vov5vietnam.sdp/low/chunklist_w1234.m3u8"


def test_an_audio_rendition_is_preferred_to_a_video_variant() -> None:
    playlist = parse(VIDEO_MASTER, "http://tv.example/live/index.m3u8")
    assert isinstance(playlist, MasterPlaylist)
    assert playlist.choose() == "http://tv.example/live/audio/only.m3u8"
    assert not playlist.variants[0].audio_only


def test_media_playlist_fields() -> None:
    playlist = parse(media(120, 3) + "#EXT-X-DISCONTINUITY\n#EXTINF:4.0,\nlast.ts\n", "http://s/a/list.m3u8")
    assert isinstance(playlist, MediaPlaylist)
    assert playlist.target_duration_s == 4.0 and playlist.media_sequence == 120 and not playlist.ended
    assert [s.sequence for s in playlist.segments] == [120, 121, 122, 123]
    assert playlist.segments[0].url == "http://s/a/media_120.ts"
    assert [s.discontinuity for s in playlist.segments] == [False, False, False, True]


def test_fmp4_init_segment() -> None:
    text = media(1, 2).replace("#EXT-X-VERSION:3", '#EXT-X-VERSION:7\n#EXT-X-MAP:URI="init.mp4"')
    playlist = parse(text, "http://s/x/p.m3u8")
    assert isinstance(playlist, MediaPlaylist) and playlist.init_url == "http://s/x/init.mp4"


@pytest.mark.parametrize("text, message", [
    ("", "#EXTM3U"), ("<html>nope</html>", "#EXTM3U"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:4\nseg.ts\n", "no #EXTINF"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:abc\n#EXTINF:4,\na.ts\n", "not a number"),
    ("#EXTM3U\n#EXT-X-TARGETDURATION:4\n", "lists no segment"),
    ('#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="k"\n#EXTINF:4,\na.ts\n', "encrypted"),
    ("#EXTM3U\n#EXTINF:1e99,\na.ts\n", "out of range"),
])
def test_bad_playlists_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(PlaylistError, match=message):
        parse(text, "http://s/p.m3u8")


def test_huge_playlists_are_refused() -> None:
    with pytest.raises(PlaylistError, match="more than"):
        parse(media(0, 10_001, duration=1), "http://s/p.m3u8")


def test_cursor_starts_near_the_live_edge_then_takes_each_segment_once() -> None:
    cursor = SegmentCursor(start_segments=3)
    first = parse(media(10, 6), "http://s/p.m3u8")
    assert isinstance(first, MediaPlaylist)
    assert [s.sequence for s in cursor.new(first)] == [13, 14, 15]
    assert cursor.new(first) == [], "a reload with nothing new gives nothing"
    later = parse(media(12, 6), "http://s/p.m3u8")
    assert isinstance(later, MediaPlaylist)
    assert [s.sequence for s in cursor.new(later)] == [16, 17]


def test_cursor_restarts_when_the_encoder_restarted() -> None:
    cursor = SegmentCursor(start_segments=2)
    before = parse(media(500, 5), "http://s/p.m3u8")
    again = parse(media(0, 2), "http://s/p.m3u8")
    assert isinstance(before, MediaPlaylist) and isinstance(again, MediaPlaylist)
    cursor.new(before)
    assert [s.sequence for s in cursor.new(again)] == [0, 1] and cursor.restarts == 1


def test_cursor_jumps_to_the_edge_when_it_fell_behind_the_window() -> None:
    cursor = SegmentCursor(start_segments=2)
    start = parse(media(0, 3), "http://s/p.m3u8")
    far = parse(media(40, 5), "http://s/p.m3u8")
    assert isinstance(start, MediaPlaylist) and isinstance(far, MediaPlaylist)
    cursor.new(start)
    assert [s.sequence for s in cursor.new(far)] == [43, 44]


def test_ended_playlist_is_played_from_its_start() -> None:
    vod = parse(media(0, 4, ended=True), "http://s/p.m3u8")
    assert isinstance(vod, MediaPlaylist) and vod.ended
    assert [s.sequence for s in SegmentCursor().new(vod)] == [0, 1, 2, 3]


def tone(seconds: float) -> np.ndarray:
    return np.full(int(seconds * SAMPLE_RATE), 0.1, dtype=np.float32)


def test_pacer_waits_to_be_primed_and_after_running_dry() -> None:
    pacer = Pacer(prime_s=1.0, max_s=10.0)
    chunk = SAMPLE_RATE // 10
    pacer.push(tone(0.5))
    assert pacer.take(chunk) is None, "not primed"
    pacer.push(tone(0.5))
    taken = [pacer.take(chunk) for _ in range(10)]
    assert all(t is not None and t.size == chunk for t in taken)
    assert pacer.take(chunk) is None and pacer.underruns == 1
    pacer.push(tone(0.3))
    assert pacer.take(chunk) is None, "after running dry it primes again rather than play in crumbs"


def test_pacer_drops_the_oldest_beyond_its_maximum() -> None:
    pacer = Pacer(prime_s=1.0, max_s=4.0)
    marked = tone(3.0)
    marked[0] = 0.9  # the oldest sample: it must be dropped first
    pacer.push(marked)
    pacer.push(tone(3.0))
    assert pacer.depth_s == pytest.approx(2.5) and pacer.dropped == int(3.5 * SAMPLE_RATE)
    out = pacer.take(SAMPLE_RATE)
    assert out is not None and float(out.max()) == pytest.approx(0.1)


# --- hostile playlists (budgeted like tests/unit/test_fuzz.py) -------------------------------------

LINES = st.sampled_from(["#EXTM3U", "#EXT-X-TARGETDURATION:4", "#EXT-X-TARGETDURATION:", "#EXTINF:4.0,",
                         "#EXTINF:x", "#EXT-X-MEDIA-SEQUENCE:7", "#EXT-X-MEDIA-SEQUENCE:-1", "#EXT-X-ENDLIST",
                         "#EXT-X-DISCONTINUITY", '#EXT-X-MAP:URI="i.mp4"', "#EXT-X-MAP:", "#EXT-X-STREAM-INF:",
                         '#EXT-X-STREAM-INF:BANDWIDTH=x,CODECS="avc1"', "#EXT-X-MEDIA:TYPE=AUDIO,URI=",
                         '#EXT-X-KEY:METHOD=NONE', "a.ts", "http://[::1", "//x/y.ts", "\x00", "é.ts", ""])


@budget(150)
@given(st.lists(st.one_of(LINES, st.text(max_size=30)), max_size=30))
def test_any_playlist_parses_or_is_refused_with_playlist_error(lines: list[str]) -> None:
    try:
        playlist = parse("\n".join(lines), "http://s/dir/p.m3u8")
    except PlaylistError:
        return
    if isinstance(playlist, MediaPlaylist):
        sequences = [s.sequence for s in playlist.segments]
        assert sequences == sorted(sequences) and all(s.duration_s >= 0 for s in playlist.segments)
        SegmentCursor().new(playlist)
    else:
        try:
            assert playlist.choose()
        except PlaylistError:
            pass
