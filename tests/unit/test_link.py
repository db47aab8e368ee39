"""The province link's pure parts: signatures and the replay window, the wire mapping, the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broadcaster.config import ConfigError, parse_config
from broadcaster.link import protocol
from broadcaster.link.signing import (
    NonceWindow,
    SignatureError,
    Verifier,
    check_reply,
    parse_header,
    sign,
    sign_reply,
)

SECRET = b"a-shared-secret-of-the-commune"
NOW = 1_800_000_000.0
PATH = "/api/v1/link/report"
BODY = b'{"plays":[]}'


def verifier() -> Verifier:
    return Verifier({"xa-an-binh": SECRET})


def refused(value: str, *, method: str = "POST", path: str = PATH, body: bytes = BODY, now: float = NOW,
            v: Verifier | None = None) -> str:
    with pytest.raises(SignatureError) as caught:
        (v or verifier()).verify(value, method, path, body, now)
    return caught.value.reason


def test_a_good_signature_is_accepted_once() -> None:
    v = verifier()
    header = sign(SECRET, "POST", PATH, "xa-an-binh", BODY, NOW)
    assert v.verify(header, "POST", PATH, BODY, NOW + 2) == "xa-an-binh"
    assert refused(header, now=NOW + 3, v=v) == "replay"


def test_wrong_secret_tampered_body_path_or_method_are_refused() -> None:
    assert refused(sign(b"another-secret-of-16+", "POST", PATH, "xa-an-binh", BODY, NOW)) == "bad_signature"
    header = sign(SECRET, "POST", PATH, "xa-an-binh", BODY, NOW)
    assert refused(header, body=b'{"plays":[1]}') == "bad_signature"
    assert refused(header, path="/api/v1/link/bulletins") == "bad_signature"
    assert refused(header, method="PUT") == "bad_signature"
    assert refused(sign(SECRET, "POST", PATH, "xa-khac", BODY, NOW)) == "unknown_key"


def test_stale_and_future_timestamps_are_refused() -> None:
    assert refused(sign(SECRET, "POST", PATH, "xa-an-binh", BODY, NOW - 301)) == "stale"
    assert refused(sign(SECRET, "POST", PATH, "xa-an-binh", BODY, NOW + 301)) == "stale"
    assert verifier().verify(sign(SECRET, "POST", PATH, "xa-an-binh", BODY, NOW - 299), "POST", PATH, BODY, NOW)


def test_a_refused_request_does_not_use_up_its_nonce() -> None:
    """A forged body under a captured header must not burn the real request's nonce."""
    v = verifier()
    header = sign(SECRET, "POST", PATH, "xa-an-binh", BODY, NOW)
    assert refused(header, body=b"forged", v=v) == "bad_signature"
    assert v.verify(header, "POST", PATH, BODY, NOW) == "xa-an-binh"


@pytest.mark.parametrize("value", ["", "Bearer abc", 'BCS-HMAC-SHA256 key="x"', 'BCS-HMAC-SHA256 key="x", ts="1", '
                                   'nonce="short", sig="AAAA"', "BCS-HMAC-SHA256 " + "x" * 600,
                                   'BCS-HMAC-SHA256 key="x", ts="now", nonce="0123456789abcdefgh", sig="AAAA"'])
def test_malformed_headers_are_refused_unread(value: str) -> None:
    with pytest.raises(SignatureError) as caught:
        parse_header(value)
    assert caught.value.reason in ("missing", "malformed")


def test_the_replay_window_is_bounded_and_forgets_only_what_has_aged_out() -> None:
    window = NonceWindow(window_s=300, max_per_key=3)
    for i in range(3):
        window.remember("k", f"nonce-{i:012d}", NOW + i)
    with pytest.raises(SignatureError) as caught:
        window.remember("k", "nonce-000000000009", NOW + 10)
    assert caught.value.reason == "busy"  # full: refused, never forgotten early
    assert window.seen("k", "nonce-000000000000", NOW + 599)
    window.remember("other", "nonce-000000000000", NOW)  # per key
    assert not window.seen("k", "nonce-000000000000", NOW + 601)  # older than any acceptable timestamp
    window.remember("k", "nonce-000000000009", NOW + 603)
    assert len(window) <= 4


def test_replies_are_signed_for_their_request() -> None:
    value = sign_reply(SECRET, "xa-an-binh", "nonce-of-the-request", 200, b"{}")
    check_reply(SECRET, "xa-an-binh", "nonce-of-the-request", 200, b"{}", value)
    for secret, nonce, body in ((b"wrong-secret-0123456", "nonce-of-the-request", b"{}"),
                                (SECRET, "nonce-of-another-one", b"{}"), (SECRET, "nonce-of-the-request", b"[]")):
        with pytest.raises(SignatureError):
            check_reply(secret, "xa-an-binh", nonce, 200, body, value)
    with pytest.raises(SignatureError):
        check_reply(SECRET, "xa-an-binh", "nonce-of-the-request", 200, b"{}", None)


# --- the wire mapping -------------------------------------------------------------------------

def bulletin_row(**changes: Any) -> dict[str, Any]:
    row = {"id": "b-1", "version": 3, "state": "approved", "title": "Bão số 9", "summary": "Tin bão",
           "body": "Bão số 9 đổ bộ chiều nay.", "category": "thien-tai", "class": "uu-tien", "language": "vi",
           "valid_from": NOW, "valid_until": NOW + 86400, "zones": ["tinh"], "media": None,
           "plan": {"asap": True, "repeat": 2, "gap_s": 30, "times": [], "at": [], "weekdays": [], "monthdays": []}}
    return {**row, **changes}


def test_a_bulletin_round_trips_through_the_feed() -> None:
    wire = protocol.bulletin_to_wire(bulletin_row(), ["86.855.29620"])
    assert wire["class"] == "uu-tien" and wire["valid_from"] == "2027-01-15T08:00:00Z" and wire["audio"] is None
    feed = protocol.parse_feed(protocol.feed_document("tinh", "Asia/Ho_Chi_Minh", [wire], NOW))
    assert feed.problems == [] and feed.server == "tinh"
    (b,) = feed.bulletins
    assert (b.upstream_id, b.version, b.withdrawn, b.klass, b.valid_from, b.valid_until, b.areas) == (
        "b-1", 3, False, "uu-tien", NOW, NOW + 86400, ("86.855.29620",))
    fields = protocol.content_fields(b, ["xa-an-binh"], "tinh", "province")
    assert fields == {"title": "Bão số 9", "summary": "Tin bão", "body": "Bão số 9 đổ bộ chiều nay.",
                      "category": "thien-tai", "klass": "uu-tien", "language": "vi", "valid_from": NOW,
                      "valid_until": NOW + 86400, "zones": ["xa-an-binh"], "media": None, "source": "province",
                      "origin": "tinh", "origin_id": "b-1",
                      "plan": {"asap": True, "repeat": 2, "gap_s": 30, "times": [], "at": [], "weekdays": [],
                               "monthdays": []}}


def test_a_recording_goes_as_a_path_on_the_upstream_and_withdrawn_ones_as_withdrawn() -> None:
    wire = protocol.bulletin_to_wire(bulletin_row(body="", media="m-77", media_duration_s=12.5), ["86"])
    assert wire["audio"] == {"path": "media/b-1", "id": "m-77", "duration_s": 12.5}
    gone = protocol.bulletin_to_wire(bulletin_row(state="withdrawn"), ["86"])
    feed = protocol.parse_feed(protocol.feed_document("tinh", "Asia/Ho_Chi_Minh", [wire, gone], NOW))
    assert [b.audio.id if b.audio else None for b in feed.bulletins] == ["m-77", None]
    assert [b.withdrawn for b in feed.bulletins] == [False, True]


def test_one_bad_bulletin_is_a_problem_not_the_whole_feed() -> None:
    good = protocol.bulletin_to_wire(bulletin_row(), ["86"])
    bad = [{**good, "id": "b-2", "class": "gap"}, {**good, "id": "b-3", "valid_until": "tomorrow"},
           {**good, "id": "b-4", "areas": []}, {**good, "id": "b-5", "body": "", "audio": None},
           {**good, "id": "b-6", "audio": {"path": "http://elsewhere/x", "id": "m"}}, "not an object"]
    feed = protocol.parse_feed({"protocol": 1, "server": "tinh", "bulletins": [good, *bad], "extra": "ignored"})
    assert [b.upstream_id for b in feed.bulletins] == ["b-1"]
    assert len(feed.problems) == 6
    assert feed.problems[0].startswith("bulletins[1].class") and feed.problems[1].startswith("bulletins[2].valid_until")
    with pytest.raises(protocol.WireError):
        protocol.parse_feed({"protocol": 2, "bulletins": []})
    with pytest.raises(protocol.WireError):
        protocol.parse_feed([good])


def test_area_codes_map_to_zones_and_unknown_ones_are_returned() -> None:
    zones, unknown = protocol.map_areas(["86.855.29620", "86.855.00000", "86.855.29620", "86"],
                                        {"86.855.29620": "xa-an-binh", "86": "tinh"})
    assert zones == ["xa-an-binh", "tinh"] and unknown == ["86.855.00000"]


def test_a_report_round_trips_and_skips_bad_items() -> None:
    play = {"id": 7, "bulletin": "b-loc", "slot": NOW, "channel": "ch-an-binh", "zone": "xa-an-binh",
            "started_at": NOW + 1, "ended_at": NOW + 31.5, "outcome": "played", "online": 12, "acknowledged": 11}
    speaker = {"id": "spk-1", "name": "Ấp 1", "zone": "ap-1", "channel": "ch-an-binh", "lat": 10.25, "lon": 105.97}
    day = {"day": "2027-01-15", "channel": "ch-an-binh", "zone": "xa-an-binh", "hours_on_air": 3.5,
           "loudspeakers": 12, "online_share": 0.93}
    doc = protocol.report_document(
        "xa-an-binh", [protocol.play_to_wire(play, "b-1", "86.855.29620"), {"id": -1, "bulletin": "x"}],
        [protocol.loudspeaker_to_wire(speaker, "86.855.29620", True, NOW), {"id": "spk-2", "status": "lost"}],
        [protocol.day_to_wire(day, "86.855.29620"), {"day": "15/01/2027"}], NOW)
    report = protocol.parse_report(doc)
    assert report.plays == [{"play_id": 7, "bulletin": "b-1", "channel": "ch-an-binh", "area": "86.855.29620",
                             "slot": NOW, "started_at": NOW + 1, "ended_at": NOW + 31.5, "duration_s": 30.5,
                             "outcome": "played", "online": 12, "acknowledged": 11}]
    assert report.inventory == [{"id": "spk-1", "name": "Ấp 1", "area": "86.855.29620", "channel": "ch-an-binh",
                                 "lat": 10.25, "lon": 105.97, "status": "online", "last_seen": NOW}]
    assert report.days == [{"day": "2027-01-15", "channel": "ch-an-binh", "area": "86.855.29620",
                            "hours_on_air": 3.5, "loudspeakers": 12, "online_share": 0.93}]
    assert [p.split(":")[0].split(".")[0] for p in report.problems] == ["plays[1]", "inventory[1]", "daily[1]"]
    assert protocol.parse_report({"protocol": 1, "plays": []}).inventory is None  # not sent: not replaced


# --- config -----------------------------------------------------------------------------------

ZONES = [{"id": "tinh", "kind": "province", "children": [{"id": "xa-an-binh", "kind": "commune"}]}]


def link_config(link: dict[str, Any], tmp_path: Path) -> Any:
    return parse_config({"zones": ZONES, "link": link}, file="t.yaml", base_dir=tmp_path).link


def test_link_config_reads_both_sides(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("a-secret-from-a-file-0001\n")
    link = link_config({"id": "tinh", "area_codes": {"xa-an-binh": "86.855.29620"},
                        "upstream": {"url": "http://127.0.0.1:8000/api/v1/link/", "id": "xa-an-binh",
                                     "secret_file": "secret", "poll_s": 5, "areas": {"86.855.29620": "xa-an-binh"},
                                     "approve": {"thong-thuong": "auto"}},
                        "downstream": [{"id": "xa-an-binh", "secret": "another-secret-0002", "zones": ["xa-an-binh"],
                                        "webhook": "http://127.0.0.1:8001/api/v1/link/bulletins"}]}, tmp_path)
    assert link.upstream.url == "http://127.0.0.1:8000/api/v1/link"
    assert link.upstream.secret == b"a-secret-from-a-file-0001"
    assert link.upstream.auto_approve("thong-thuong") and link.upstream.auto_approve("khan-cap")
    assert not link.upstream.auto_approve("uu-tien")
    assert dict(link.upstream.areas) == {"86.855.29620": "xa-an-binh"} and dict(link.area_codes) == {
        "xa-an-binh": "86.855.29620"}
    assert link.downstream[0].zones == ("xa-an-binh",) and link.downstream[0].secret == b"another-secret-0002"


@pytest.mark.parametrize(("link", "key"), [
    ({"upstream": {"url": "ftp://x/", "id": "a", "secret": "0123456789abcdef"}}, "link.upstream.url"),
    ({"upstream": {"url": "http://x/", "id": "a", "secret": "short"}}, "link.upstream.secret"),
    ({"upstream": {"url": "http://x/", "id": "a"}}, "link.upstream.secret"),
    ({"upstream": {"url": "http://x/", "id": "a", "secret": "0123456789abcdef", "areas": {"86": "nowhere"}}},
     "link.upstream.areas.86"),
    ({"upstream": {"url": "http://x/", "id": "a", "secret": "0123456789abcdef", "approve": {"uu-tien": "yes"}}},
     "link.upstream.approve.uu-tien"),
    ({"upstream": {"url": "http://x/", "id": "a", "secret": "0123456789abcdef", "poll_s": 0.5}},
     "link.upstream.poll_s"),
    ({"downstream": [{"id": "a", "secret": "0123456789abcdef", "zones": ["nowhere"]}]}, "link.downstream[0].zones[0]"),
    ({"downstream": [{"id": "a", "secret": "0123456789abcdef", "zones": []}]}, "link.downstream[0].zones"),
    ({"area_codes": {"nowhere": "86"}}, "link.area_codes.nowhere"),
    ({"colour": 1}, "link.colour"),
])
def test_link_config_errors_name_the_key(link: dict[str, Any], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        link_config(link, tmp_path)
    assert caught.value.key == key and caught.value.file == "t.yaml"
