"""CAP 1.2 parsing: real-looking Vietnamese alerts parse to the right fields, and hostile bodies only raise CapError."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from broadcaster.control.cap import (
    EFFECTIVE_SKEW_S,
    MAX_CAP_BYTES,
    CapArea,
    CapError,
    CapInfo,
    CapMessage,
    check_times,
    parse_cap,
    priority_of,
    spoken_text,
    zones_for,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "cap"
ICT = timezone(timedelta(hours=7))
NS = "urn:oasis:names:tc:emergency:cap:1.2"
AREA_MAP = {"VN-TINH=86": "vinh-long", "29590": "xa-an-binh", "VN-XA=29602": "xa-tan-hoa"}


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def alert(body: str, namespace: str = NS) -> bytes:
    """A minimal CAP document around ``body``, for inputs that differ from a good one in one element."""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="{namespace}">{body}</alert>'.encode()


HEADER = (
    "<identifier>T-1</identifier><sender>test.example.vn</sender><sent>2026-11-26T14:30:00+07:00</sent>"
    "<status>Actual</status><msgType>Alert</msgType><scope>Public</scope>"
)
INFO = (
    "<info><event>Bão</event><urgency>Expected</urgency><severity>Severe</severity><certainty>Likely</certainty>"
    "<area><areaDesc>Vĩnh Long</areaDesc><geocode><valueName>VN-TINH</valueName><value>86</value></geocode></area>"
    "</info>"
)


def make_info(**changes: object) -> CapInfo:
    fields: dict[str, object] = {
        "language": "vi-VN",
        "event": "Bão",
        "urgency": "Expected",
        "severity": "Severe",
        "certainty": "Likely",
        "headline": "",
        "description": "",
        "instruction": "",
        "audio_uris": (),
        "areas": (),
        "expires": None,
    }
    fields.update(changes)
    return CapInfo(**fields)  # type: ignore[arg-type]


def make_message(status: str = "Actual", infos: tuple[CapInfo, ...] = ()) -> CapMessage:
    sent = datetime(2026, 11, 26, 14, 30, tzinfo=ICT)
    return CapMessage("T-1", "test.example.vn", sent, status, "Alert", "Public", (), infos)


# Good messages


def test_storm_warning() -> None:
    message = parse_cap(load("storm_warning.xml"))
    assert message.identifier == "VN-NCHMF-2026-BAO09-001"
    assert message.sender == "nchmf.gov.vn"
    assert message.sent == datetime(2026, 11, 26, 14, 30, tzinfo=ICT)
    assert message.sent.utcoffset() == timedelta(hours=7)
    assert (message.status, message.msg_type, message.scope) == ("Actual", "Alert", "Public")
    assert message.references == ()
    [info] = message.infos
    assert info.language == "vi-VN"
    assert info.event == "Bão"
    assert (info.urgency, info.severity, info.certainty) == ("Expected", "Severe", "Likely")
    assert info.headline == "Cảnh báo bão số 9, rủi ro thiên tai cấp độ 4"
    assert info.description.startswith("Hồi 13 giờ ngày 26/11")
    assert info.instruction.endswith("theo hướng dẫn của chính quyền xã.")
    assert info.audio_uris == ()
    assert info.expires == datetime(2026, 11, 28, 18, 0, tzinfo=ICT)
    assert info.effective == datetime(2026, 11, 26, 14, 30, tzinfo=ICT)
    assert info.onset == datetime(2026, 11, 27, 6, 0, tzinfo=ICT)
    assert info.areas == (
        CapArea("Tỉnh Vĩnh Long", (("VN-TINH", "86"),)),
        CapArea("Xã An Bình, tỉnh Vĩnh Long", (("VN-XA", "29590"),)),
    )
    assert message.info_for() is info
    assert priority_of(info) == "emergency"
    assert zones_for(info, AREA_MAP) == ["vinh-long", "xa-an-binh"]


def test_flood_update_references_the_warning_it_replaces() -> None:
    message = parse_cap(load("flood_update.xml"))
    assert message.msg_type == "Update"
    assert message.references == (("nchmf.gov.vn", "VN-NCHMF-2026-LU-0142", datetime(2026, 10, 11, 19, 0, tzinfo=ICT)),)
    info = message.info_for()
    assert info.event == "Lũ"
    assert (info.urgency, info.severity) == ("Expected", "Moderate")
    assert priority_of(info) == "announcement"
    assert info.areas[0].geocodes == (("VN-XA", "29590"), ("VN-XA", "29602"))
    assert zones_for(info, AREA_MAP) == ["xa-an-binh", "xa-tan-hoa"]


def test_cancel_needs_no_info() -> None:
    message = parse_cap(load("storm_cancel.xml"))
    assert message.msg_type == "Cancel"
    assert message.infos == ()
    storm = parse_cap(load("storm_warning.xml"))
    assert message.references == ((storm.sender, storm.identifier, storm.sent),)
    with pytest.raises(CapError) as caught:
        message.info_for()
    assert caught.value.code == "missing"


def test_bilingual_exercise_picks_vietnamese_block() -> None:
    message = parse_cap(load("tsunami_exercise_bilingual.xml"))
    assert message.status == "Exercise"
    assert [info.language for info in message.infos] == ["en-US", "vi-VN"]
    vietnamese, english = message.info_for(), message.info_for(["en"])
    assert vietnamese.event == "Sóng thần"
    assert english.event == "Tsunami"
    assert message.info_for(["vi-VN"]) is vietnamese
    assert message.info_for(["VI"]) is vietnamese, "language tags are case-insensitive"
    assert message.info_for(["fr", "de"]) is english, "no match falls back to the first block"
    assert priority_of(vietnamese) == "emergency"


def test_audio_resource_kept_image_dropped() -> None:
    message = parse_cap(load("saltwater_audio.xml"))
    info = message.info_for()
    assert info.language == "en-US", "CAP's default when <language> is absent"
    assert info.audio_uris == ("https://vinhlong.gov.vn/media/canh-bao/2026-03-11-xam-nhap-man.mp3",)
    assert info.expires is None
    assert priority_of(info) == "announcement"
    assert zones_for(info, AREA_MAP) == ["xa-tan-hoa"]


def test_only_absolute_http_audio_uris_are_kept() -> None:
    resources = "".join(
        f"<resource><resourceDesc>r</resourceDesc><mimeType>{mime}</mimeType><uri>{uri}</uri></resource>"
        for mime, uri in [
            ("audio/mpeg", "file:///etc/passwd"),
            ("audio/wav", "tin-bao.wav"),
            ("Audio/OGG", "http://radio.example.vn/a.ogg"),
            ("video/mp4", "https://radio.example.vn/a.mp4"),
        ]
    )
    info = parse_cap(alert(HEADER + INFO.replace("<area>", resources + "<area>"))).info_for()
    assert info.audio_uris == ("http://radio.example.vn/a.ogg",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T14:30:00+07:00", datetime(2026, 11, 26, 14, 30, tzinfo=ICT)),
        ("2026-11-26T07:30:00-00:00", datetime(2026, 11, 26, 7, 30, tzinfo=UTC)),
        ("2026-11-26T07:30:00Z", datetime(2026, 11, 26, 7, 30, tzinfo=UTC)),
        ("2026-11-26T14:30:00.25+07:00", datetime(2026, 11, 26, 14, 30, 0, 250000, tzinfo=ICT)),
        ("2003-06-17T14:57:00-07:00", datetime(2003, 6, 17, 21, 57, tzinfo=UTC)),
    ],
)
def test_datetimes(text: str, expected: datetime) -> None:
    sent = parse_cap(alert(HEADER.replace("2026-11-26T14:30:00+07:00", text) + INFO)).sent
    assert sent == expected
    assert sent.tzinfo is not None


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T14:30:00",
        "2026-11-26 14:30:00+07:00",
        "2026-11-26",
        "2026-13-26T14:30:00+07:00",
        "2026-02-30T14:30:00+07:00",
        "2026-11-26T24:00:00+07:00",
        "2026-11-26T14:30:00+24:00",
        "2026-11-26T14:30:00+07:60",
        "20261126T143000+0700",
        "٢٠٢٦-11-26T14:30:00+07:00",
    ],
)
def test_bad_datetimes_are_malformed(text: str) -> None:
    with pytest.raises(CapError) as caught:
        parse_cap(alert(HEADER.replace("2026-11-26T14:30:00+07:00", text) + INFO))
    assert caught.value.code == "malformed"
    assert "<sent>" in caught.value.message


# priority, spoken text, zones


@pytest.mark.parametrize(
    ("severity", "urgency", "priority"),
    [
        ("Extreme", "Immediate", "emergency"),
        ("Extreme", "Expected", "emergency"),
        ("Severe", "Immediate", "emergency"),
        ("Severe", "Expected", "emergency"),
        ("Extreme", "Future", "announcement"),
        ("Severe", "Past", "announcement"),
        ("Severe", "Unknown", "announcement"),
        ("Moderate", "Immediate", "announcement"),
        ("Minor", "Expected", "announcement"),
        ("Unknown", "Immediate", "announcement"),
    ],
)
def test_priority(severity: str, urgency: str, priority: str) -> None:
    assert priority_of(make_info(severity=severity, urgency=urgency)) == priority


def test_spoken_text_order_and_whitespace() -> None:
    message = parse_cap(load("storm_warning.xml"))
    text = spoken_text(message, message.info_for())
    assert text.startswith("Cảnh báo bão số 9, rủi ro thiên tai cấp độ 4. Hồi 13 giờ ngày 26/11")
    assert "108,5 độ Kinh Đông. Sức gió mạnh nhất" in text, "hard-wrapped lines become one line"
    assert "mưa to đến rất to. Người dân gia cố nhà cửa" in text, "description, then instruction"
    assert "\n" not in text and "  " not in text and ".." not in text


def test_spoken_text_does_not_double_full_stops() -> None:
    message = parse_cap(load("saltwater_audio.xml"))
    assert spoken_text(message, message.info_for()) == (
        "Xâm nhập mặn tăng từ ngày 13 đến 17/3. Độ mặn 4‰ vào sâu 45-50 km trên sông Cổ Chiên. "
        "Không lấy nước sông để tưới cây ăn trái; trữ nước ngọt sinh hoạt."
    )


def test_spoken_text_falls_back_to_event() -> None:
    message = make_message()
    assert spoken_text(message, make_info()) == "Bão"
    assert spoken_text(message, make_info(headline=" \n ", instruction="Sơ tán")) == "Bão. Sơ tán"


def test_spoken_text_announces_drills_and_tests() -> None:
    message = parse_cap(load("tsunami_exercise_bilingual.xml"))
    assert spoken_text(message, message.info_for()).startswith(
        "Đây là tin diễn tập. Cảnh báo sóng thần vùng ven biển tỉnh Vĩnh Long. Động đất mạnh"
    )
    assert spoken_text(message, message.info_for(["en"])).startswith("This is an exercise. Tsunami warning")
    assert spoken_text(make_message("Test"), make_info()) == "Đây là tin thử nghiệm. Bão"


def test_zones_for_key_styles_dedupe_and_order() -> None:
    info = make_info(
        areas=(
            CapArea("xã", (("VN-XA", "29590"), ("VN-XA", "99999"))),
            CapArea("tỉnh", (("VN-TINH", "86"), ("VN-XA", "29590"))),
            CapArea("xã 2", (("VN-XA", "29602"),)),
        )
    )
    assert zones_for(info, AREA_MAP) == ["xa-an-binh", "vinh-long", "xa-tan-hoa"]
    # A qualified key wins over a bare one for the same value.
    assert zones_for(info, {"86": "bare", "VN-TINH=86": "qualified"}) == ["qualified"]
    assert zones_for(info, {"86": "bare"}) == ["bare"]


def test_zones_for_nothing_mapped_is_no_area() -> None:
    unmapped = make_info(areas=(CapArea("Tỉnh Bến Tre", (("VN-TINH", "83"),)),))
    polygon_only = make_info(areas=(CapArea("Vùng ven biển", ()),))
    for info in (unmapped, polygon_only, make_info()):
        with pytest.raises(CapError) as caught:
            zones_for(info, AREA_MAP)
        assert caught.value.code == "no_area"


# Times: effective, onset, expires. `now` is always a fixed instant, written out as Unix seconds.

# 2026-10-12T12:00:00+07:00 is 2026-10-12T05:00:00Z: 20738 days after 1970-01-01, plus 5 h.
NOON_12_OCT = 20738 * 86400 + 5 * 3600
# The storm warning's instants, likewise by hand: 2026-11-26T14:30+07:00 is 07:30Z on day 20783,
# 2026-11-27T06:00+07:00 is 23:00Z on day 20783, 2026-11-28T18:00+07:00 is 11:00Z on day 20785.
STORM_SENT = 20783 * 86400 + 7 * 3600 + 30 * 60
STORM_ONSET = 20783 * 86400 + 23 * 3600
STORM_EXPIRES = 20785 * 86400 + 11 * 3600


def test_hand_computed_instants_are_the_documents_times() -> None:
    assert datetime(2026, 10, 12, 12, 0, tzinfo=ICT).timestamp() == NOON_12_OCT == 1791781200
    storm = parse_cap(load("storm_warning.xml")).info_for()
    assert storm.effective is not None and storm.onset is not None and storm.expires is not None
    assert (storm.effective.timestamp(), storm.onset.timestamp(), storm.expires.timestamp()) == (
        STORM_SENT, STORM_ONSET, STORM_EXPIRES)


def test_valid_from_effective_to_just_before_expires_whatever_the_onset() -> None:
    info = parse_cap(load("storm_warning.xml")).info_for()
    # At sending time the onset (next morning) is still ahead: a warning is for exactly that, so it plays.
    for now in (STORM_SENT, STORM_ONSET - 1, STORM_ONSET, STORM_ONSET + 3600, STORM_EXPIRES - 0.001):
        check_times(info, now)


def test_expired_storm_warning_is_refused_from_its_expiry_on() -> None:
    info = parse_cap(load("storm_warning.xml")).info_for()
    for now in (STORM_EXPIRES, STORM_EXPIRES + 1, STORM_EXPIRES + 365 * 86400):
        with pytest.raises(CapError) as caught:
            check_times(info, now)
        assert caught.value.code == "expired"


def test_expired_fixture_parses_but_check_times_refuses_it_with_the_time() -> None:
    message = parse_cap(load("flood_expired.xml"))  # parsing is about form; validity in time is check_times
    info = message.info_for()
    assert info.expires == datetime(2026, 10, 12, 11, 0, tzinfo=ICT)
    with pytest.raises(CapError) as caught:
        check_times(info, NOON_12_OCT)
    assert caught.value.code == "expired"
    assert caught.value.message == (
        "the message expired at 2026-10-12T11:00:00+07:00 (now 2026-10-12T12:00:00+07:00); nothing plays")
    assert isinstance(caught.value, ValueError)
    check_times(info, NOON_12_OCT - 3600 - 1)  # 10:59:59: still valid


def test_future_effective_fixture_is_refused_until_it_takes_effect() -> None:
    info = parse_cap(load("dam_release_future.xml")).info_for()
    assert info.effective == datetime(2026, 10, 12, 14, 0, tzinfo=ICT)
    assert info.onset == datetime(2026, 10, 12, 14, 30, tzinfo=ICT)
    sent = NOON_12_OCT - 7 * 3600  # 05:00+07:00, when it arrives
    effective = NOON_12_OCT + 2 * 3600
    with pytest.raises(CapError) as caught:
        check_times(info, sent)
    assert caught.value.code == "not_yet_effective"
    assert caught.value.message.startswith(
        "the message takes effect at 2026-10-12T14:00:00+07:00 (now 2026-10-12T05:00:00+07:00); ")
    assert "nothing plays" in caught.value.message
    with pytest.raises(CapError):
        check_times(info, effective - 61)
    # A sender's clock up to a minute ahead of ours is tolerated; from then on it plays until it expires.
    assert EFFECTIVE_SKEW_S == 60.0
    for now in (effective - 60, effective, effective + 86400 - 1):
        check_times(info, now)
    with pytest.raises(CapError) as caught:
        check_times(info, effective + 86400)
    assert caught.value.code == "expired"


def test_effective_defaults_to_sent() -> None:
    # The flood update has no <effective>: CAP says it is effective from <sent>, 2026-10-12T07:15:00+07:00.
    info = parse_cap(load("flood_update.xml")).info_for()
    assert info.effective == datetime(2026, 10, 12, 7, 15, tzinfo=ICT) and info.onset is None
    sent = NOON_12_OCT - 4 * 3600 - 45 * 60
    check_times(info, sent)
    check_times(info, sent - 60)
    with pytest.raises(CapError) as caught:
        check_times(info, sent - 61)
    assert caught.value.code == "not_yet_effective"


def test_no_expiry_never_expires() -> None:
    info = parse_cap(load("saltwater_audio.xml")).info_for()
    assert info.expires is None
    check_times(info, 4102444800)  # 2100-01-01T00:00:00Z
    check_times(make_info(), 0.0)  # built by hand, with no times at all


def test_times_compare_as_instants_across_offsets() -> None:
    # 11:00+07:00 is 04:00Z and 23:00-05:00 the evening before: the same instant, whatever the sender's offset.
    for expires in ("2026-10-12T04:00:00Z", "2026-10-12T04:00:00-00:00", "2026-10-11T23:00:00-05:00"):
        info = parse_cap(load("flood_expired.xml").replace(b"2026-10-12T11:00:00+07:00", expires.encode()))
        check_times(info.info_for(), NOON_12_OCT - 3600 - 1)
        with pytest.raises(CapError):
            check_times(info.info_for(), NOON_12_OCT - 3600)


@pytest.mark.parametrize("element", ["effective", "onset", "expires"])
def test_a_time_without_offset_is_malformed_with_a_clear_reason(element: str) -> None:
    data = load("flood_expired.xml").decode()
    start = data.index(f"<{element}>", data.index("<info>")) + len(element) + 2
    local = data[start:start + 19]  # the same time with "+07:00" cut off
    with pytest.raises(CapError) as caught:
        parse_cap((data[:start] + local + data[start + 25:]).encode())
    assert caught.value.code == "malformed"
    assert caught.value.message == (
        f"<info/{element}> {local!r} has no time zone offset; CAP requires one, e.g. +07:00")


@pytest.mark.parametrize("element", ["effective", "onset"])
def test_bad_or_repeated_effective_and_onset_are_malformed(element: str) -> None:
    data = load("flood_expired.xml").decode()
    start = data.index(f"<{element}>", data.index("<info>"))
    end = data.index(f"</{element}>") + len(element) + 3
    with pytest.raises(CapError) as caught:
        parse_cap((data[:start] + f"<{element}>soon</{element}>" + data[end:]).encode())
    assert caught.value.code == "malformed" and f"<info/{element}>" in caught.value.message
    with pytest.raises(CapError) as caught:
        parse_cap((data[:end] + data[start:end] + data[end:]).encode())
    assert caught.value.code == "malformed" and "appears 2 times" in caught.value.message


# Bad inputs

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE alert [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol9;</identifier></alert>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&xxe;</identifier></alert>"""


def storm(old: str, new: str) -> bytes:
    data = load("storm_warning.xml").decode()
    assert old in data
    return data.replace(old, new, 1).encode()


def padded_storm(size: int) -> bytes:
    data = load("storm_warning.xml")
    return data.replace(b"</description>", b" " * (size - len(data)) + b"</description>")


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("billion laughs", BILLION_LAUGHS, "unsafe_xml"),
    ("external entity", EXTERNAL_ENTITY, "unsafe_xml"),
    ("external DTD", b'<!DOCTYPE alert SYSTEM "http://attacker.example/cap.dtd">' + alert(HEADER + INFO), "unsafe_xml"),
    ("truncated", load("storm_warning.xml")[:700], "malformed"),
    ("empty", b"", "malformed"),
    ("not XML", b'{"identifier": "T-1"}', "malformed"),
    ("unknown encoding", b'<?xml version="1.0" encoding="klingon"?><alert/>', "malformed"),
    ("non-text codec", b'<?xml version="1.0" encoding="base64"?><alert/>', "malformed"),
    ("multi-byte codec", b'<?xml version="1.0" encoding="big5"?><alert/>', "malformed"),
    ("CAP 1.1 namespace", alert(HEADER + INFO, "urn:oasis:names:tc:emergency:cap:1.1"), "not_cap"),
    ("no namespace", alert(HEADER + INFO).replace(f' xmlns="{NS}"'.encode(), b""), "not_cap"),
    ("wrong root", f'<feed xmlns="{NS}"/>'.encode(), "not_cap"),
    ("missing sent", storm("<sent>2026-11-26T14:30:00+07:00</sent>", ""), "missing"),
    ("empty identifier", storm("VN-NCHMF-2026-BAO09-001", ""), "missing"),
    ("missing scope", storm("<scope>Public</scope>", ""), "missing"),
    ("status Draft", storm("<status>Actual", "<status>Draft"), "unsupported"),
    ("status System", storm("<status>Actual", "<status>System"), "unsupported"),
    ("msgType Ack", storm("<msgType>Alert", "<msgType>Ack"), "unsupported"),
    ("msgType Error", storm("<msgType>Alert", "<msgType>Error"), "unsupported"),
    ("status misspelt", storm("<status>Actual", "<status>actual"), "malformed"),
    ("severity misspelt", storm("<severity>Severe", "<severity>SEVERE"), "malformed"),
    ("two identifiers", storm("<sender>", "<identifier>B</identifier><sender>"), "malformed"),
    ("space in identifier", storm("VN-NCHMF-2026-BAO09-001", "VN NCHMF"), "malformed"),
    ("missing event", storm("<event>Bão</event>", ""), "missing"),
    ("missing certainty", storm("<certainty>Likely</certainty>", ""), "missing"),
    ("alert without info", alert(HEADER), "missing"),
    ("alert without area", alert(HEADER + INFO[: INFO.index("<area>")] + "</info>"), "missing"),
    ("geocode without value", storm("<value>86</value>", ""), "missing"),
    ("area without areaDesc", storm("<areaDesc>Tỉnh Vĩnh Long</areaDesc>", ""), "missing"),
    ("cancel without references", alert(HEADER.replace(">Alert<", ">Cancel<")), "missing"),
    ("bad reference", storm("<scope>Public</scope>", "<scope>Public</scope><references>a,b</references>"), "malformed"),
    ("bad expires", storm("2026-11-28T18:00:00+07:00", "tomorrow"), "malformed"),
    ("300 KB", padded_storm(300 * 1024), "too_large"),
]


@pytest.mark.parametrize(("data", "code"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_raises_cap_error(data: bytes, code: str) -> None:
    with pytest.raises(CapError) as caught:
        parse_cap(data)
    assert caught.value.code == code, caught.value.message
    assert isinstance(caught.value, ValueError)
    assert len(str(caught.value)) < 300, "error messages stay short whatever the input"


def test_size_limit_is_on_bytes() -> None:
    assert parse_cap(padded_storm(MAX_CAP_BYTES)).identifier == "VN-NCHMF-2026-BAO09-001"
    with pytest.raises(CapError) as caught:
        parse_cap(padded_storm(MAX_CAP_BYTES + 1))
    assert caught.value.code == "too_large"


def test_missing_names_the_element() -> None:
    with pytest.raises(CapError) as caught:
        parse_cap(storm("<sent>2026-11-26T14:30:00+07:00</sent>", ""))
    assert "<sent>" in caught.value.message
    with pytest.raises(CapError) as caught:
        parse_cap(storm("<urgency>Expected</urgency>", ""))
    assert "<info/urgency>" in caught.value.message


def test_cancel_may_carry_info() -> None:
    data = alert(
        HEADER.replace(">Alert<", ">Cancel<")
        + "<references>test.example.vn,T-0,2026-11-26T14:00:00+07:00 other.example.vn,X-9,2026-11-25T08:00:00Z"
        + "</references>"
        + INFO
    )
    message = parse_cap(data)
    assert [(sender, identifier) for sender, identifier, _ in message.references] == [
        ("test.example.vn", "T-0"),
        ("other.example.vn", "X-9"),
    ]
    assert message.infos[0].event == "Bão"


GOOD_FILES = sorted(path.name for path in DATA.glob("*.xml"))


@pytest.mark.parametrize("name", GOOD_FILES)
def test_random_mutations_only_raise_cap_error(name: str) -> None:
    """2,000 seeded mutations per file: byte flips, deletions, XML-significant insertions, truncations, and
    alphanumeric swaps inside names and values."""
    original = load(name)
    rng = random.Random(f"cap-fuzz-{name}")
    interesting = [b"<", b">", b"&", b"/", b'"', b"=", b"!", b"?", b"\x00", b"\xff", b"\xc3", b"&lt;", b"]]>"]
    outcomes: dict[str, int] = {}
    for _ in range(2000):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            operation = rng.randrange(5)
            if operation == 0:
                data[position] = rng.randrange(256)
            elif operation == 4 and chr(data[position]).isalnum():
                # Keeps the XML well-formed more often than not, so that CAP validation is what gets fuzzed.
                data[position] = ord(rng.choice("0123456789AaEeTtZz:-+ "))
            elif operation == 1:
                del data[position : position + rng.randint(1, 16)]
            elif operation == 2:
                data[position:position] = rng.choice(interesting)
            else:
                del data[position:]
            if not data:
                break
        try:
            parse_cap(bytes(data))
            outcome = "parsed"
        except CapError as error:
            outcome = error.code
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert {"parsed", "malformed"} <= set(outcomes), outcomes
    assert set(outcomes) <= {"parsed", "malformed", "missing", "not_cap", "unsupported", "unsafe_xml"}
