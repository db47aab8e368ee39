"""OASIS Common Alerting Protocol 1.2: turn a warning system's CAP alert into what a loudspeaker alert needs.

The parser is pure (bytes in, frozen dataclasses out) so the HTTP edge can call it on an untrusted body and
map every failure to one error response: anything that goes wrong raises :class:`CapError` with a short
machine-readable ``code``, never another exception. XML is parsed with defusedxml and DTDs forbidden, because a
CAP body comes from the network and a DTD is the door to entity expansion and external entity reads; CAP itself
never needs one.

Only what a loudspeaker broadcast uses is kept: who sent which message, its status and type, the references a
Cancel or Update points at, and per info block the texts to read, the audio to play, the areas to reach and
when it is valid (effective, onset, expires; see :func:`check_times`). Polygons and circles are not kept:
loudspeakers are addressed by administrative zone, which geocodes name and shapes do not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException

MAX_CAP_BYTES = 256 * 1024
CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"

# CAP 1.2 section 3.2 enumerations. Values are case-sensitive; a misspelt severity must not quietly turn an
# emergency into an announcement, so values outside these sets are refused rather than passed through.
STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")
ACCEPTED_STATUSES = ("Actual", "Exercise", "Test")
MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
ACCEPTED_MSG_TYPES = ("Alert", "Update", "Cancel")
SCOPES = ("Public", "Restricted", "Private")
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")

EMERGENCY_SEVERITIES = ("Extreme", "Severe")
EMERGENCY_URGENCIES = ("Immediate", "Expected")

# How far in the future an <effective> time may be and still play now: a sender's clock a little ahead of ours.
EFFECTIVE_SKEW_S = 60.0

# CAP 1.2 <language>: "If not present, an implicit default value of 'en-US' SHALL be assumed".
DEFAULT_LANGUAGE = "en-US"

# xs:dateTime as CAP uses it: seconds required, time zone required. CAP forbids "Z" and asks for "-00:00",
# but "Z" is valid xs:dateTime, unambiguous, and emitted by real feeds, so it is accepted as UTC.
_DATETIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?"
    r"(?:(?P<utc>Z)|(?P<sign>[+-])(?P<tz_hour>[0-9]{2}):(?P<tz_minute>[0-9]{2}))"
)
# The same without the offset: a local time with no zone is ambiguous, and CAP requires the offset.
_LOCAL_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?")
# Characters CAP 1.2 forbids in <identifier> and <sender>; references are built from them, comma-separated and
# whitespace-delimited, so a value containing one could not be referenced unambiguously by a later Cancel.
_RESTRICTED = re.compile(r"[\s,<&]")
_WHITESPACE = re.compile(r"\s+")
_SENTENCE_END = (".", "!", "?", "…", ":", ";")
_MAX_ECHO = 60  # characters of an offending value quoted back in an error message

# Spoken before the alert text of a drill or a test, so nobody in the commune mistakes it for a real warning.
_NOT_ACTUAL_NOTICE = {
    "vi": {"Exercise": "Đây là tin diễn tập", "Test": "Đây là tin thử nghiệm"},
    "en": {"Exercise": "This is an exercise", "Test": "This is a test"},
}


class CapError(ValueError):
    """A CAP body that cannot become a loudspeaker alert.

    ``code`` is stable and meant for API responses and metrics labels: ``too_large``, ``malformed``,
    ``unsafe_xml``, ``not_cap``, ``unsupported``, ``missing`` or ``no_area`` from :func:`parse_cap` and
    :func:`zones_for`; ``expired`` or ``not_yet_effective`` from :func:`check_times`. ``message`` is for people
    and names the offending element.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CapArea:
    description: str
    geocodes: tuple[tuple[str, str], ...]  # (valueName, value), in document order


@dataclass(frozen=True)
class CapInfo:
    language: str
    event: str
    urgency: str
    severity: str
    certainty: str
    headline: str
    description: str
    instruction: str
    audio_uris: tuple[str, ...]  # absolute http(s) URIs of audio/* resources
    areas: tuple[CapArea, ...]
    expires: datetime | None  # timezone-aware; None: valid until cancelled
    # <effective>, or the message's <sent> when absent (CAP 1.2: "the effective time SHALL be assumed to be the
    # same as in <sent>"). None only for a block built by hand; parse_cap always fills it.
    effective: datetime | None = None
    onset: datetime | None = None  # when the event is expected to begin; informational, never refuses


@dataclass(frozen=True)
class CapMessage:
    identifier: str
    sender: str
    sent: datetime  # timezone-aware
    status: str
    msg_type: str
    scope: str
    references: tuple[tuple[str, str, datetime], ...]  # (sender, identifier, sent)
    infos: tuple[CapInfo, ...]

    def info_for(self, languages: Sequence[str] = ("vi", "vi-VN", "en", "en-US")) -> CapInfo:
        """The info block to broadcast: the first language preference any block matches, else the first block.

        Languages match case-insensitively when equal or when one is a prefix of the other at a subtag
        boundary, so "vi" picks a "vi-VN" block and "vi-VN" picks a plain "vi" block. A Cancel may carry no
        info at all; asking it for one raises ``CapError("missing")`` rather than inventing a block.
        """
        if not self.infos:
            raise CapError("missing", f"message {self.identifier} has no <info> block")
        for wanted in languages:
            for info in self.infos:
                if _language_matches(wanted, info.language):
                    return info
        return self.infos[0]


def parse_cap(data: bytes) -> CapMessage:
    """Parse and validate one CAP 1.2 ``<alert>``; every failure is a :class:`CapError`.

    Accepted: status Actual, Exercise or Test (whether to broadcast the last two is the caller's policy);
    msgType Alert or Update, which need at least one info block and at least one area, and Cancel, which needs
    at least one reference and no info. System and Draft messages, Ack and Error are refused as
    ``unsupported``: none of them is meant to reach the public.
    """
    if len(data) > MAX_CAP_BYTES:
        raise CapError("too_large", f"CAP message is {len(data)} bytes, the limit is {MAX_CAP_BYTES}")
    root = _parse_xml(data)
    if root.tag != _q("alert"):
        raise CapError("not_cap", f"root element is {_echo(root.tag)}, expected <alert> in namespace {CAP_NAMESPACE}")

    identifier = _token(root, "identifier")
    sender = _token(root, "sender")
    sent = _datetime(_required_text(root, "sent"), "sent")
    status = _enumerated(root, "status", STATUSES)
    if status not in ACCEPTED_STATUSES:
        raise CapError(
            "unsupported", f"<status> {status} is not for the public; accepted: {', '.join(ACCEPTED_STATUSES)}"
        )
    msg_type = _enumerated(root, "msgType", MSG_TYPES)
    if msg_type not in ACCEPTED_MSG_TYPES:
        raise CapError(
            "unsupported", f"<msgType> {msg_type} carries no alert; accepted: {', '.join(ACCEPTED_MSG_TYPES)}"
        )
    scope = _enumerated(root, "scope", SCOPES)
    references = _references(_optional_text(root, "references"))
    infos = tuple(_info(element, sent) for element in root.findall(_q("info")))

    if msg_type == "Cancel":
        if not references:
            raise CapError("missing", "a Cancel needs <references> naming the message(s) it cancels")
    else:
        if not infos:
            raise CapError("missing", f"an {msg_type} needs at least one <info>")
        if not any(info.areas for info in infos):
            raise CapError("missing", f"an {msg_type} needs at least one <area>")
    return CapMessage(
        identifier=identifier,
        sender=sender,
        sent=sent,
        status=status,
        msg_type=msg_type,
        scope=scope,
        references=references,
        infos=infos,
    )


def priority_of(info: CapInfo) -> str:
    """Emergency (interrupts whatever is playing) only for severe or extreme, imminent or expected threats.

    Everything else, including Unknown severity or urgency, is an "announcement": a false interrupt on every
    loudspeaker of a province costs more trust than a queued announcement costs time.
    """
    if info.severity in EMERGENCY_SEVERITIES and info.urgency in EMERGENCY_URGENCIES:
        return "emergency"
    return "announcement"


def spoken_text(message: CapMessage, info: CapInfo) -> str:
    """The text for TTS: headline (or event), description, instruction, as sentences on one line.

    Whitespace is collapsed because CAP texts are often hard-wrapped and TTS reads line breaks as pauses. A
    part already ending in punctuation is not given a second full stop. Exercise and Test messages start with
    a notice that this is a drill or a test (in the info block's language, Vietnamese or English), because a
    loudspeaker voice announcing a storm is otherwise indistinguishable from a real warning. Never empty for a
    parsed message: without a headline the (required) event name is read.
    """
    parts: list[str] = []
    notices = _NOT_ACTUAL_NOTICE["vi" if _language_matches("vi", info.language) else "en"]
    if message.status in notices:
        parts.append(notices[message.status])
    parts.append(_collapse(info.headline) or _collapse(info.event))
    parts.extend(_collapse(text) for text in (info.description, info.instruction))
    spoken = ""
    for part in filter(None, parts):
        if spoken:
            spoken += " " if spoken.endswith(_SENTENCE_END) else ". "
        spoken += part
    return spoken


def zones_for(info: CapInfo, area_map: Mapping[str, str]) -> list[str]:
    """Zone ids reached by an info block's geocodes, in document order without repeats.

    Each geocode is looked up first as "valueName=value" (e.g. "VN-TINH=86"), then as the bare value ("86"):
    qualified keys keep two code lists that share values apart, bare keys keep simple configurations simple.
    Geocodes that map to nothing are skipped; if none maps, ``CapError("no_area")`` is raised so that an alert
    is never broadcast to nobody, or to everybody by default.
    """
    zones: list[str] = []
    for area in info.areas:
        for value_name, value in area.geocodes:
            zone = area_map.get(f"{value_name}={value}")
            if zone is None:
                zone = area_map.get(value)
            if zone is not None and zone not in zones:
                zones.append(zone)
    if not zones:
        codes = [f"{name}={value}" for area in info.areas for name, value in area.geocodes]
        raise CapError("no_area", f"no geocode maps to a zone: {_echo(' '.join(codes)) if codes else 'none given'}")
    return zones


def check_times(info: CapInfo, now: float) -> None:
    """Refuse an info block that is not valid at ``now`` (Unix seconds, wall clock); return if it may play.

    - ``expires`` at or before ``now``: ``CapError("expired")``. A warning system that has moved on must not
      have a stale storm read out on every loudspeaker of a province.
    - ``effective`` later than ``now`` + :data:`EFFECTIVE_SKEW_S`: ``CapError("not_yet_effective")``. We do
      not queue alerts, and playing a warning hours before it is meant to take effect would be a different
      message from the one sent; so it is refused, and the sender (or operator) sends it again when it is due.
      The tolerance absorbs a sender whose clock runs a little ahead of ours: without it an emergency stamped
      a few seconds "in the future" would be refused outright, which costs more than playing it seconds early.
      ``effective`` defaults to ``sent``, so a message sent far in the future is refused the same way.
    - ``onset`` never refuses: a storm whose onset is tomorrow is exactly what a warning is for, and one
      whose onset has passed is still under way. It is only there for the text.

    A Cancel needs no check (stopping an alert is always allowed); call this for the info block an Alert or
    Update would broadcast, before anything it references is cancelled, so that a refused Update leaves the
    alert it would have replaced on air.
    """
    if info.expires is not None and info.expires.timestamp() <= now:
        raise CapError(
            "expired",
            f"the message expired at {info.expires.isoformat()} (now {_instant(now, info.expires)}); nothing plays",
        )
    if info.effective is not None and info.effective.timestamp() > now + EFFECTIVE_SKEW_S:
        raise CapError(
            "not_yet_effective",
            f"the message takes effect at {info.effective.isoformat()} (now {_instant(now, info.effective)}); "
            "alerts are not queued, nothing plays: send it again when it is effective",
        )


def _instant(now: float, like: datetime) -> str:
    """``now`` written in the same offset as a sender's time, so the two read side by side."""
    return datetime.fromtimestamp(now, like.tzinfo).isoformat(timespec="seconds")


def _parse_xml(data: bytes) -> Element:
    """Parse with defusedxml, mapping each failure it and expat can produce to a CapError code.

    LookupError and ValueError come from the XML declaration: an unknown encoding name, a non-text codec
    ("base64") or a multi-byte one expat cannot use; to a sender they are all just a malformed document.
    """
    try:
        root: Element = DefusedET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise CapError("unsafe_xml", f"DTDs and entity declarations are refused ({type(exc).__name__})") from None
    except ParseError as exc:
        raise CapError("malformed", f"not well-formed XML: {exc}") from None
    except (LookupError, ValueError) as exc:
        raise CapError("malformed", f"unusable XML encoding: {_echo(str(exc))}") from None
    return root


def _info(element: Element, sent: datetime) -> CapInfo:
    language = _optional_text(element, "language") or DEFAULT_LANGUAGE
    return CapInfo(
        language=language,
        event=_required_text(element, "event", "info/event"),
        urgency=_enumerated(element, "urgency", URGENCIES, "info/urgency"),
        severity=_enumerated(element, "severity", SEVERITIES, "info/severity"),
        certainty=_enumerated(element, "certainty", CERTAINTIES, "info/certainty"),
        headline=_optional_text(element, "headline"),
        description=_optional_text(element, "description"),
        instruction=_optional_text(element, "instruction"),
        audio_uris=tuple(uri for resource in element.findall(_q("resource")) if (uri := _audio_uri(resource))),
        areas=tuple(_area(area) for area in element.findall(_q("area"))),
        expires=_optional_datetime(element, "expires"),
        effective=_optional_datetime(element, "effective") or sent,
        onset=_optional_datetime(element, "onset"),
    )


def _audio_uri(resource: Element) -> str | None:
    """The URI of an audio resource worth fetching, or None.

    Only absolute http(s) URIs are kept: a relative URI refers to an embedded <derefUri> we do not decode, and
    other schemes (file:, ftp:) are not something a server should fetch on a sender's behalf.
    """
    _required_text(resource, "resourceDesc", "resource/resourceDesc")
    mime_type = _required_text(resource, "mimeType", "resource/mimeType")
    uri = _optional_text(resource, "uri")
    if not mime_type.lower().startswith("audio/") or not uri:
        return None
    if not uri.lower().startswith(("https://", "http://")):
        return None
    return uri


def _area(element: Element) -> CapArea:
    geocodes = []
    for geocode in element.findall(_q("geocode")):
        geocodes.append(
            (
                _required_text(geocode, "valueName", "area/geocode/valueName"),
                _required_text(geocode, "value", "area/geocode/value"),
            )
        )
    return CapArea(description=_required_text(element, "areaDesc", "area/areaDesc"), geocodes=tuple(geocodes))


def _references(text: str) -> tuple[tuple[str, str, datetime], ...]:
    references = []
    for triple in text.split():
        parts = triple.split(",")
        if len(parts) != 3 or not all(parts):
            raise CapError("malformed", f"<references> entry {_echo(triple)} is not sender,identifier,sent")
        references.append((parts[0], parts[1], _datetime(parts[2], "references")))
    return tuple(references)


def _optional_datetime(parent: Element, name: str) -> datetime | None:
    text = _optional_text(parent, name, f"info/{name}")
    return _datetime(text, f"info/{name}") if text else None


def _datetime(text: str, name: str) -> datetime:
    """A CAP dateTime (e.g. 2026-11-26T14:30:00+07:00) as an aware datetime in the sender's own offset."""
    match = _DATETIME.fullmatch(text)
    if match is None:
        if _LOCAL_DATETIME.fullmatch(text):
            raise CapError(
                "malformed", f"<{name}> {_echo(text)} has no time zone offset; CAP requires one, e.g. +07:00"
            )
        raise CapError("malformed", f"<{name}> {_echo(text)} is not a CAP dateTime such as 2026-11-26T14:30:00+07:00")
    try:
        if match["utc"]:
            zone = UTC
        else:
            offset = timedelta(hours=int(match["tz_hour"]), minutes=int(match["tz_minute"]))
            if offset >= timedelta(hours=24) or int(match["tz_minute"]) >= 60:
                raise ValueError("offset out of range")
            zone = timezone(-offset if match["sign"] == "-" else offset)
        microsecond = int((match["fraction"] or "0")[:6].ljust(6, "0"))
        return datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            microsecond,
            tzinfo=zone,
        )
    except ValueError:
        raise CapError("malformed", f"<{name}> {_echo(text)} is not a valid date and time") from None


def _q(name: str) -> str:
    return f"{{{CAP_NAMESPACE}}}{name}"


def _single(parent: Element, name: str, path: str) -> Element | None:
    """The one child called ``name``; two of them is malformed, since consumers may disagree on which counts."""
    found = parent.findall(_q(name))
    if len(found) > 1:
        raise CapError("malformed", f"<{path}> appears {len(found)} times")
    return found[0] if found else None


def _optional_text(parent: Element, name: str, path: str | None = None) -> str:
    element = _single(parent, name, path or name)
    if element is None or element.text is None:
        return ""
    return element.text.strip()


def _required_text(parent: Element, name: str, path: str | None = None) -> str:
    text = _optional_text(parent, name, path)
    if not text:
        raise CapError("missing", f"<{path or name}> is required")
    return text


def _token(parent: Element, name: str) -> str:
    text = _required_text(parent, name)
    if _RESTRICTED.search(text):
        raise CapError("malformed", f"<{name}> {_echo(text)} contains a space, comma, '<' or '&'")
    return text


def _enumerated(parent: Element, name: str, allowed: tuple[str, ...], path: str | None = None) -> str:
    text = _required_text(parent, name, path)
    if text not in allowed:
        raise CapError("malformed", f"<{path or name}> {_echo(text)} is not one of {', '.join(allowed)}")
    return text


def _collapse(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _language_matches(wanted: str, language: str) -> bool:
    wanted, language = wanted.lower(), language.lower()
    return wanted == language or language.startswith(wanted + "-") or wanted.startswith(language + "-")


def _echo(text: str) -> str:
    """Quote a sender's value back, bounded, so an error message cannot be made to carry a whole payload."""
    return repr(text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "…")
