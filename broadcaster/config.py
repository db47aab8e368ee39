"""Configuration: one YAML file loaded once into typed, validated dataclasses.

Components receive these objects and never read files or the environment
themselves. Every error names the file, the key path and what was expected,
because the person reading it is an operator at a commune, not the author.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

FRAME_MS_CHOICES = (20, 40, 60)
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # use with fullmatch
LANGUAGE_PATTERN = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8}){0,3}")  # BCP-47-ish, lower case: vi, km, vi-vn; fullmatch
MIN_KEY_LENGTH = 16


class ConfigError(Exception):
    """A configuration problem, located by file and key path."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        super().__init__(f"{file}: {key}: {message}")


@dataclass(frozen=True)
class TlsConfig:
    """HTTPS on the HTTP port (broadcaster/web/tls.py): PEM files, checked when the config is loaded."""

    certificate: Path  # the server's certificate, then its intermediates
    key: Path  # its private key, unencrypted
    redirect_port: int | None = None  # a plain-HTTP port (80) answering every request with a 301 to HTTPS


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    http_port: int = 8000
    udp_port: int = 5004
    udp_fanout: str = "auto"  # "auto" (sendmmsg where available) or "loop" (one sendto per address)
    core_nice: int = -5  # the audio core process's nice value: ahead of control for the CPU (root may lower it)
    core_processes: int = 0  # processes the channels are spread over; 0 ("auto"): one per CPU (core/shards.py)
    tls: TlsConfig | None = None  # set: the HTTP port serves HTTPS only


@dataclass(frozen=True)
class AudioConfig:
    frame_ms: int = 20
    bitrate: int = 32000
    complexity: int = 5
    dtx: bool = False
    fec: bool = False
    packet_loss_percent: int = 0

    @property
    def frame_samples(self) -> int:
        return 48 * self.frame_ms


@dataclass(frozen=True)
class HttpConfig:
    page_ms: int = 1000
    burst_ms: int = 10000  # Chromium starts at once only with about this much (benchmarks/faststart.py)
    max_backlog_bytes: int = 256 * 1024
    max_listeners: int = 2000  # per server: each holds a socket and up to max_backlog_bytes
    max_transcoders: int = 24  # HLS and MP3 encoders at once (one transcode thread does about 40, docs/hls.md)
    max_connections_per_address: int = 64  # open connections from one IP address (NAT: a commune office)
    keep_burst: bool = True  # a channel nobody hears still encodes, so its first listener starts at once


@dataclass(frozen=True)
class HlsConfig:
    """HLS of each public channel (control/hls.py): AAC-LC in MPEG-TS, encoded only while asked for."""

    segment_s: int = 4         # seconds per segment (2-6); also the playlist's target duration
    window: int = 6            # segments listed in the live playlist
    idle_s: float = 45.0       # the encoder stops this long after the last playlist or segment request
    first_segment_wait_s: float = 10.0  # a request on a cold channel waits this long, then 503 + Retry-After
    bitrate: int = 64000       # AAC bits per second (mono)
    container: str = "ts"      # "ts" (MPEG-TS, HLS version 3: every player) or "fmp4" (CMAF fragments)


@dataclass(frozen=True)
class Mp3Config:
    """The MP3 listener stream (control/mp3.py), encoded only while someone listens."""

    bitrate: int = 64000       # bits per second (mono)
    metaint: int = 16000       # audio bytes between ICY metadata blocks (Icecast's default)


@dataclass(frozen=True)
class SpeakerPolicy:
    keepalive_s: float = 5.0
    missed_keepalives: int = 3
    replay_window_s: float = 30.0

    @property
    def expiry_s(self) -> float:
        return self.keepalive_s * self.missed_keepalives


@dataclass(frozen=True)
class StorageConfig:
    path: Path = Path("var/broadcaster.db")
    secret_file: Path = Path("var/secret.key")
    media_dir: Path = Path("var/media")
    max_upload_bytes: int = 100 * 1024 * 1024
    max_upload_duration_s: float = 3600.0  # decoding holds the whole programme in memory
    loudness_target_lufs: float = -16.0
    min_free_bytes: int = 64 * 1024 * 1024  # kept for the database: uploads and recordings stop short of it


@dataclass(frozen=True)
class LiveConfig:
    target_delay_ms: int = 300        # studio audio buffered before it plays
    max_delay_ms: int = 2500          # the buffer grows up to this for bursty consoles; beyond, oldest dropped
    stall_timeout_ms: int = 3000      # no audio from a studio for this long: the channel falls back
    recordings_dir: Path = Path("var/recordings")
    recording_retention_days: int = 90


@dataclass(frozen=True)
class RelayConfig:
    allow_private: bool = False      # upstreams on loopback/LAN addresses (off: a relay URL cannot reach the LAN)
    max_redirects: int = 5
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 10.0      # an upstream silent this long is down
    max_playlist_bytes: int = 1 << 20
    max_segment_bytes: int = 16 << 20
    max_fetch_s: float = 60.0         # a playlist or segment that takes longer to arrive is given up on
    buffer_s: float = 1.0             # audio buffered before a relay plays (HLS starts 3 segments from live)
    max_buffer_s: float = 30.0        # beyond this the oldest audio is dropped: the relay stays near live
    stall_timeout_ms: int = 1000      # no audio for this long: the channel falls back to its idle programme
    backoff_max_s: float = 5.0        # reconnects back off from 1 s to this
    max_workers: int = 8              # upstreams fetched at once (one worker process each, shared by channels)


@dataclass(frozen=True)
class AlertConfig:
    operators_may_alert: bool = False   # commune operators may alert their own zones
    volume: int = 100                   # loudspeaker volume during an alert
    repeat: int = 2                     # times the message plays
    gap_s: float = 2.0                  # silence between repeats
    cap_areas: tuple[tuple[str, str], ...] = ()  # CAP geocode ("VN-TINH=86" or "86") -> zone id
    resume_within_s: float = 600.0      # after a crash, an alert begun less than this ago plays again


@dataclass(frozen=True)
class TtsEngineConfig:
    """A command-line text-to-speech engine for one language (control/tts.py CommandTTS, docs/tts.md)."""

    language: str
    command: tuple[str, ...]     # argv; "{language}" and "{voice}" are replaced; text on stdin, WAV on stdout
    voice: str | None = None     # what "{voice}" becomes (default: the language)
    name: str | None = None      # what logs, metrics and the API call it (default: the program's file name)
    timeout_s: float = 120.0


@dataclass(frozen=True)
class TtsConfig:
    """Speech for text (bulletins, alerts): which engine reads which language (docs/tts.md)."""

    espeak_languages: tuple[str, ...] = ("vi", "en")  # served by espeak-ng when it is installed
    espeak_rate_wpm: int = 140
    max_text_chars: int = 5000
    engines: tuple[TtsEngineConfig, ...] = ()  # a command engine takes precedence over espeak-ng
    workers: int = 2                 # renders at once (threads; the engines run as processes)
    max_waiting: int = 8             # renders queued beyond those; more are refused (503)


@dataclass(frozen=True)
class BulletinsConfig:
    self_approval_zones: tuple[str, ...] = ()  # zones whose bulletins their author may approve (one officer)
    late_within_s: float = 600.0                # a slot first seen this late still plays (a restart); later not


@dataclass(frozen=True)
class ApiConfig:
    token_days: int = 90  # a new API token's lifetime; POST /api/v1/tokens may ask for less, never more
    session_hours: int = 12  # a console sign-in's lifetime (its cookie), then the user signs in again


@dataclass(frozen=True)
class ConsoleConfig:
    """The operator console at / (docs/console.md)."""

    # A map tile layer under the loudspeaker map, such as https://tile.example.vn/{z}/{x}/{y}.png; none by
    # default: the map is drawn from the loudspeakers' own lat/lon, offline.
    tile_url: str | None = None


@dataclass(frozen=True)
class UserSeed:
    """A user the configuration file makes in an empty database (the demo's admin). Its password is in a
    file, so it must be changed at the first sign-in."""

    name: str
    role: str
    zones: tuple[str, ...]
    password: str


@dataclass(frozen=True)
class ScheduleConfig:
    timezone: str = "Asia/Ho_Chi_Minh"


@dataclass(frozen=True)
class ReportConfig:
    year_starts: str = "12-15"  # MM-DD, local time: the yearly report runs from this day to the day before it


@dataclass(frozen=True)
class Zone:
    id: str
    name: str
    parent: str | None
    kind: str


@dataclass(frozen=True)
class Multicast:
    group: str
    port: int
    ttl: int = 1


@dataclass(frozen=True)
class ChannelConfig:
    id: str
    name: str
    zone: str
    public: bool = True
    multicast: Multicast | None = None
    loop: Path | None = None
    loop_gain_db: float = 0.0


@dataclass(frozen=True)
class LoudspeakerConfig:
    id: str
    zone: str
    channel: str
    key: str


@dataclass(frozen=True)
class EdgeLink:
    """A channel this server takes from the origin: subscribed there as the loudspeaker ``device``."""

    channel: str          # the channel here (and on the origin, unless origin_channel says otherwise)
    device: str
    key: str
    origin_channel: str


@dataclass(frozen=True)
class EdgeConfig:
    """An edge server (docs/scaling.md): channels relayed from an origin server's UDP side."""

    origin: tuple[str, int] | None = None
    links: tuple[EdgeLink, ...] = ()


@dataclass(frozen=True)
class LinkUpstream:
    """This server is downstream of a source information system (broadcaster/link/downstream.py)."""

    url: str                       # the upstream's link base, e.g. http://province:8000/api/v1/link
    id: str                        # our id there (the key id we sign with)
    secret: bytes
    origin: str = "province"       # the upstream's id here: imported bulletins are (origin, its id)
    source: str = "province"       # what imported bulletins count as: province or central
    poll_s: float = 60.0           # 0: webhook only
    report_s: float = 60.0         # plays and daily figures go up this often
    inventory_s: float = 900.0     # the loudspeaker inventory goes up this often
    timeout_s: float = 10.0
    max_body_bytes: int = 1 << 20  # a feed's size
    max_media_bytes: int = 64 << 20  # a bulletin's recording fetched from the upstream
    areas: tuple[tuple[str, str], ...] = ()   # area code -> zone id
    approve: tuple[tuple[str, bool], ...] = (("thong-thuong", False), ("uu-tien", False), ("khan-cap", True))

    def auto_approve(self, klass: str) -> bool:
        return dict(self.approve).get(klass, False)


@dataclass(frozen=True)
class LinkDownstream:
    """A server this one feeds as the province (broadcaster/link/upstream.py)."""

    id: str
    secret: bytes
    zones: tuple[str, ...]
    webhook: str | None = None     # where new and changed bulletins are pushed (optional)


@dataclass(frozen=True)
class LinkConfig:
    id: str = "broadcaster"        # this server's name in feeds it serves
    upstream: LinkUpstream | None = None
    downstream: tuple[LinkDownstream, ...] = ()
    area_codes: tuple[tuple[str, str], ...] = ()   # zone id -> area code, for bulletins sent down
    push_s: float = 5.0            # how often the feed of each downstream with a webhook is checked for changes
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Config:
    path: str
    server: ServerConfig = field(default_factory=ServerConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    hls: HlsConfig = field(default_factory=HlsConfig)
    mp3: Mp3Config = field(default_factory=Mp3Config)
    speakers: SpeakerPolicy = field(default_factory=SpeakerPolicy)
    storage: StorageConfig = field(default_factory=StorageConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    bulletins: BulletinsConfig = field(default_factory=BulletinsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    reports: ReportConfig = field(default_factory=ReportConfig)
    zones: tuple[Zone, ...] = ()
    channels: tuple[ChannelConfig, ...] = ()
    loudspeakers: tuple[LoudspeakerConfig, ...] = ()
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    users: tuple[UserSeed, ...] = ()

    def channel(self, channel_id: str) -> ChannelConfig | None:
        return next((c for c in self.channels if c.id == channel_id), None)


class _Reader:
    """Walks a parsed YAML document, producing errors that carry the key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.file, key, message)

    def mapping(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(value)}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise self.fail(
                f"{key}.{unknown[0]}" if key else unknown[0],
                f"unknown key; expected one of: {', '.join(sorted(allowed))}",
            )
        return value

    def sequence(self, value: Any, key: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_kind(value)}")
        return value

    def typed(self, data: dict[str, Any], name: str, key: str, kind: type[T],
              default: T | None = None, required: bool = False) -> T:
        path = f"{key}.{name}" if key else name
        if name not in data or data[name] is None:
            if required:
                raise self.fail(path, f"is required ({kind.__name__})")
            return default  # type: ignore[return-value]
        value = data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(path, f"expected {kind.__name__}, got {_kind(value)} {value!r}")
        return value

    def int_range(self, data: dict[str, Any], name: str, key: str, default: int,
                  lo: int, hi: int) -> int:
        value = self.typed(data, name, key, int, default)
        if not lo <= value <= hi:
            raise self.fail(f"{key}.{name}", f"expected an integer from {lo} to {hi}, got {value}")
        return value

    def float_range(self, data: dict[str, Any], name: str, key: str, default: float,
                    lo: float, hi: float) -> float:
        value = self.typed(data, name, key, float, default)
        if not lo <= value <= hi:
            raise self.fail(f"{key}.{name}", f"expected a number from {lo} to {hi}, got {value}")
        return value

    def choice(self, data: dict[str, Any], name: str, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.typed(data, name, key, str, default)
        if value not in choices:
            raise self.fail(f"{key}.{name}", f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def ident(self, data: dict[str, Any], name: str, key: str) -> str:
        value = self.typed(data, name, key, str, required=True)
        if not ID_PATTERN.fullmatch(value):
            raise self.fail(
                f"{key}.{name}",
                f"expected an id of letters, digits, '-', '_' or '.' (at most 64), got {value!r}",
            )
        return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file; raise ConfigError on any problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "(file)", f"not UTF-8 text: {exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(file, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    return parse_config(document, file=file, base_dir=Path(path).resolve().parent)


def parse_config(document: Any, *, file: str, base_dir: Path) -> Config:
    r = _Reader(file)
    top = r.mapping(document, "", {"server", "audio", "http", "hls", "mp3", "speakers", "storage", "live",
                                   "relay", "schedule", "alerts", "bulletins", "api", "reports", "zones", "channels",
                                   "loudspeakers", "edge", "tts", "link", "console", "users"})
    server = _server(r, top.get("server"), base_dir)
    audio = _audio(r, top.get("audio"))
    http = _http(r, top.get("http"))
    hls = _hls(r, top.get("hls"))
    mp3 = _mp3(r, top.get("mp3"))
    speakers = _speaker_policy(r, top.get("speakers"))
    storage = _storage(r, top.get("storage"), base_dir)
    live = _live(r, top.get("live"), base_dir)
    relay = _relay(r, top.get("relay"))
    schedule = _schedule(r, top.get("schedule"))
    alerts = _alerts(r, top.get("alerts"))
    api = _api(r, top.get("api"))
    tts = _tts(r, top.get("tts"))
    reports = _reports(r, top.get("reports"))
    zones = _zones(r, top.get("zones"))
    zone_ids = {z.id for z in zones}
    bulletins = _bulletins(r, top.get("bulletins"), zone_ids)
    channels = _channels(r, top.get("channels"), zone_ids, base_dir)
    loudspeakers = _loudspeakers(r, top.get("loudspeakers"), zones, channels)
    edge = _edge(r, top.get("edge"), channels)
    link = _link(r, top.get("link"), zone_ids, base_dir)
    console = _console(r, top.get("console"))
    users = _users(r, top.get("users"), zone_ids)
    return Config(path=file, server=server, audio=audio, http=http, hls=hls, mp3=mp3, speakers=speakers,
                  storage=storage, live=live, relay=relay, schedule=schedule, alerts=alerts, bulletins=bulletins,
                  api=api, tts=tts, reports=reports,
                  zones=tuple(zones), channels=tuple(channels),
                  loudspeakers=tuple(loudspeakers), edge=edge, link=link, console=console, users=tuple(users))


def _edge(r: _Reader, value: Any, channels: list[ChannelConfig]) -> EdgeConfig:
    d = r.mapping(value, "edge", {"origin", "channels"})
    if not d:
        return EdgeConfig()
    origin = r.typed(d, "origin", "edge", str, required=True)
    host, _, port = origin.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        address = (host.strip("[]"), int(port))
        if not 0 < address[1] < 65536:
            raise ValueError
    except ValueError:
        raise r.fail("edge.origin", f"expected the origin's UDP address as IP:PORT, got {origin!r}") from None
    channel_ids = {c.id for c in channels}
    links: list[EdgeLink] = []
    for i, item in enumerate(r.sequence(d.get("channels"), "edge.channels")):
        k = f"edge.channels[{i}]"
        link = r.mapping(item, k, {"channel", "device", "key", "origin_channel"})
        channel = r.typed(link, "channel", k, str, required=True)
        if channel not in channel_ids:
            raise r.fail(f"{k}.channel", f"no channel with id {channel!r} is defined under channels")
        if any(existing.channel == channel for existing in links):
            raise r.fail(f"{k}.channel", f"channel {channel!r} is relayed twice")
        key = r.typed(link, "key", k, str, required=True)
        if len(key.encode("utf-8")) < MIN_KEY_LENGTH:
            raise r.fail(f"{k}.key", f"expected a secret of at least {MIN_KEY_LENGTH} bytes")
        links.append(EdgeLink(channel=channel, device=r.ident(link, "device", k), key=key,
                              origin_channel=r.typed(link, "origin_channel", k, str, channel)))
    if not links:
        raise r.fail("edge.channels", "an edge needs at least one channel to take from its origin")
    return EdgeConfig(origin=address, links=tuple(links))


def _link_url(r: _Reader, d: dict[str, Any], name: str, key: str, required: bool = True) -> str | None:
    url = r.typed(d, name, key, str, required=required)
    if url is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise r.fail(f"{key}.{name}", f"expected an http:// or https:// URL with no query, got {url!r}")
    return url.rstrip("/")


def _link_secret(r: _Reader, d: dict[str, Any], key: str, base_dir: Path) -> bytes:
    secret, secret_file = d.get("secret"), d.get("secret_file")
    if (secret is None) == (secret_file is None):
        raise r.fail(f"{key}.secret", "give exactly one of secret and secret_file")
    if secret_file is not None:
        path = base_dir / r.typed(d, "secret_file", key, str)
        try:
            value = path.read_bytes().strip()
        except OSError as exc:
            raise r.fail(f"{key}.secret_file", f"cannot read {path}: {exc.strerror or exc}") from None
    else:
        value = r.typed(d, "secret", key, str).encode("utf-8")
    if len(value) < MIN_KEY_LENGTH:
        raise r.fail(f"{key}.secret", f"expected a secret of at least {MIN_KEY_LENGTH} bytes")
    return value


def _code_map(r: _Reader, value: Any, key: str, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, (str, int)) and isinstance(v, (str, int))
                                              for k, v in value.items()):
        raise r.fail(key, f"expected a mapping of {what}")
    return {str(k): str(v) for k, v in value.items()}


def _link(r: _Reader, value: Any, zone_ids: set[str], base_dir: Path) -> LinkConfig:
    d = r.mapping(value, "link", {"id", "upstream", "downstream", "area_codes", "push_s", "timeout_s"})
    if not d:
        return LinkConfig()
    upstream = None
    if d.get("upstream") is not None:
        k = "link.upstream"
        u = r.mapping(d["upstream"], k, {"url", "id", "secret", "secret_file", "origin", "source", "poll_s",
                                         "report_s", "inventory_s", "timeout_s", "max_body_bytes",
                                         "max_media_bytes", "areas", "approve"})
        areas = _code_map(r, u.get("areas"), f"{k}.areas", "area codes to zone ids")
        for code, zone in areas.items():
            if zone not in zone_ids:
                raise r.fail(f"{k}.areas.{code}", f"no zone with id {zone!r} is defined under zones")
        approve = dict(LinkUpstream.approve)
        for klass, how in _code_map(r, u.get("approve"), f"{k}.approve", "bulletin classes to auto or submit").items():
            if klass not in approve:
                raise r.fail(f"{k}.approve.{klass}", f"expected one of {', '.join(approve)}")
            if how not in ("auto", "submit"):
                raise r.fail(f"{k}.approve.{klass}", f"expected auto or submit, got {how!r}")
            approve[klass] = how == "auto"
        poll = r.float_range(u, "poll_s", k, LinkUpstream.poll_s, 0.0, 86400.0)
        if 0 < poll < 1:
            raise r.fail(f"{k}.poll_s", "expected 0 (webhook only) or at least 1 second")
        url = _link_url(r, u, "url", k)
        assert url is not None
        upstream = LinkUpstream(
            url=url, id=r.ident(u, "id", k), secret=_link_secret(r, u, k, base_dir),
            origin=r.typed(u, "origin", k, str, LinkUpstream.origin),
            source=r.choice(u, "source", k, LinkUpstream.source, ("province", "central")),
            poll_s=poll,
            report_s=r.float_range(u, "report_s", k, LinkUpstream.report_s, 1.0, 86400.0),
            inventory_s=r.float_range(u, "inventory_s", k, LinkUpstream.inventory_s, 1.0, 86400.0),
            timeout_s=r.float_range(u, "timeout_s", k, LinkUpstream.timeout_s, 0.5, 120.0),
            max_body_bytes=r.int_range(u, "max_body_bytes", k, LinkUpstream.max_body_bytes, 1024, 1 << 20),
            max_media_bytes=r.int_range(u, "max_media_bytes", k, LinkUpstream.max_media_bytes, 1024, 1 << 30),
            areas=tuple(areas.items()), approve=tuple(approve.items()))
    downstream: list[LinkDownstream] = []
    for i, item in enumerate(r.sequence(d.get("downstream"), "link.downstream")):
        k = f"link.downstream[{i}]"
        ds = r.mapping(item, k, {"id", "secret", "secret_file", "zones", "webhook"})
        ident = r.ident(ds, "id", k)
        if any(existing.id == ident for existing in downstream):
            raise r.fail(f"{k}.id", f"downstream {ident!r} is listed twice")
        zones = [str(z) for z in r.sequence(ds.get("zones"), f"{k}.zones")]
        if not zones:
            raise r.fail(f"{k}.zones", "expected the zones whose bulletins go to this server")
        for j, zone in enumerate(zones):
            if zone not in zone_ids:
                raise r.fail(f"{k}.zones[{j}]", f"no zone with id {zone!r} is defined under zones")
        downstream.append(LinkDownstream(id=ident, secret=_link_secret(r, ds, k, base_dir), zones=tuple(zones),
                                         webhook=_link_url(r, ds, "webhook", k, required=False)))
    codes = _code_map(r, d.get("area_codes"), "link.area_codes", "zone ids to area codes")
    for zone in codes:
        if zone not in zone_ids:
            raise r.fail(f"link.area_codes.{zone}", f"no zone with id {zone!r} is defined under zones")
    return LinkConfig(id=r.typed(d, "id", "link", str, LinkConfig.id), upstream=upstream,
                      downstream=tuple(downstream), area_codes=tuple(codes.items()),
                      push_s=r.float_range(d, "push_s", "link", LinkConfig.push_s, 0.5, 3600.0),
                      timeout_s=r.float_range(d, "timeout_s", "link", LinkConfig.timeout_s, 0.5, 120.0))


def _tls(r: _Reader, value: Any, base_dir: Path) -> TlsConfig | None:
    if value is None:
        return None
    d = r.mapping(value, "server.tls", {"certificate", "key", "redirect_port"})
    paths = {name: (base_dir / r.typed(d, name, "server.tls", str, required=True)).resolve()
             for name in ("certificate", "key")}
    from broadcaster.web.tls import TlsError, load_material  # cryptography: only for a server that uses TLS

    try:
        load_material(paths["certificate"], paths["key"])
    except TlsError as exc:
        raise r.fail(f"server.tls.{exc.field}", exc.message) from None
    redirect = r.int_range(d, "redirect_port", "server.tls", -1, 0, 65535) if "redirect_port" in d else None
    return TlsConfig(certificate=paths["certificate"], key=paths["key"], redirect_port=redirect)


def _server(r: _Reader, value: Any, base_dir: Path) -> ServerConfig:
    d = r.mapping(value, "server", {"host", "http_port", "udp_port", "udp_fanout", "core_nice", "core_processes",
                                    "tls"})
    host = r.typed(d, "host", "server", str, ServerConfig.host)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise r.fail("server.host", f"expected an IP address such as 0.0.0.0 or 127.0.0.1, got {host!r}") from None
    return ServerConfig(
        host=host,
        http_port=r.int_range(d, "http_port", "server", ServerConfig.http_port, 0, 65535),
        udp_port=r.int_range(d, "udp_port", "server", ServerConfig.udp_port, 0, 65535),
        udp_fanout=r.choice(d, "udp_fanout", "server", ServerConfig.udp_fanout, ("auto", "loop")),
        core_nice=r.int_range(d, "core_nice", "server", ServerConfig.core_nice, -20, 19),
        core_processes=0 if d.get("core_processes", "auto") == "auto"
        else r.int_range(d, "core_processes", "server", 1, 1, 64),
        tls=_tls(r, d.get("tls"), base_dir),
    )


def _audio(r: _Reader, value: Any) -> AudioConfig:
    d = r.mapping(value, "audio", {"frame_ms", "bitrate", "complexity", "dtx", "fec",
                                   "packet_loss_percent"})
    frame_ms = r.typed(d, "frame_ms", "audio", int, AudioConfig.frame_ms)
    if frame_ms not in FRAME_MS_CHOICES:
        raise r.fail("audio.frame_ms", f"expected one of {FRAME_MS_CHOICES} (milliseconds), got {frame_ms}")
    return AudioConfig(
        frame_ms=frame_ms,
        bitrate=r.int_range(d, "bitrate", "audio", AudioConfig.bitrate, 6000, 510000),
        complexity=r.int_range(d, "complexity", "audio", AudioConfig.complexity, 0, 10),
        dtx=r.typed(d, "dtx", "audio", bool, AudioConfig.dtx),
        fec=r.typed(d, "fec", "audio", bool, AudioConfig.fec),
        packet_loss_percent=r.int_range(d, "packet_loss_percent", "audio", 0, 0, 100),
    )


def _http(r: _Reader, value: Any) -> HttpConfig:
    d = r.mapping(value, "http", {"page_ms", "burst_ms", "max_backlog_bytes", "max_listeners",
                                  "max_connections_per_address", "keep_burst", "max_transcoders"})
    return HttpConfig(
        page_ms=r.int_range(d, "page_ms", "http", HttpConfig.page_ms, 20, 5000),
        burst_ms=r.int_range(d, "burst_ms", "http", HttpConfig.burst_ms, 0, 30000),
        max_backlog_bytes=r.int_range(d, "max_backlog_bytes", "http",
                                      HttpConfig.max_backlog_bytes, 16384, 64 * 1024 * 1024),
        max_listeners=r.int_range(d, "max_listeners", "http", HttpConfig.max_listeners, 0, 1_000_000),
        max_connections_per_address=r.int_range(d, "max_connections_per_address", "http",
                                                HttpConfig.max_connections_per_address, 1, 100_000),
        keep_burst=r.typed(d, "keep_burst", "http", bool, HttpConfig.keep_burst),
        max_transcoders=r.int_range(d, "max_transcoders", "http", HttpConfig.max_transcoders, 0, 1000),
    )


def _hls(r: _Reader, value: Any) -> HlsConfig:
    d = r.mapping(value, "hls", {"segment_s", "window", "idle_s", "first_segment_wait_s", "bitrate", "container"})
    return HlsConfig(
        segment_s=r.int_range(d, "segment_s", "hls", HlsConfig.segment_s, 2, 6),
        window=r.int_range(d, "window", "hls", HlsConfig.window, 3, 30),
        idle_s=r.float_range(d, "idle_s", "hls", HlsConfig.idle_s, 1.0, 3600.0),
        first_segment_wait_s=r.float_range(d, "first_segment_wait_s", "hls",
                                           HlsConfig.first_segment_wait_s, 0.0, 30.0),
        bitrate=r.int_range(d, "bitrate", "hls", HlsConfig.bitrate, 16000, 320000),
        container=r.choice(d, "container", "hls", HlsConfig.container, ("ts", "fmp4")),
    )


def _mp3(r: _Reader, value: Any) -> Mp3Config:
    d = r.mapping(value, "mp3", {"bitrate", "metaint"})
    return Mp3Config(
        bitrate=r.int_range(d, "bitrate", "mp3", Mp3Config.bitrate, 32000, 320000),
        metaint=r.int_range(d, "metaint", "mp3", Mp3Config.metaint, 256, 1_000_000),
    )


def _speaker_policy(r: _Reader, value: Any) -> SpeakerPolicy:
    d = r.mapping(value, "speakers", {"keepalive_s", "missed_keepalives", "replay_window_s"})
    return SpeakerPolicy(
        keepalive_s=r.float_range(d, "keepalive_s", "speakers", SpeakerPolicy.keepalive_s, 0.5, 3600),
        missed_keepalives=r.int_range(d, "missed_keepalives", "speakers",
                                      SpeakerPolicy.missed_keepalives, 1, 100),
        replay_window_s=r.float_range(d, "replay_window_s", "speakers",
                                      SpeakerPolicy.replay_window_s, 1, 3600),
    )


def _storage(r: _Reader, value: Any, base_dir: Path) -> StorageConfig:
    d = r.mapping(value, "storage", {"path", "secret_file", "media_dir", "max_upload_bytes",
                                     "max_upload_duration_s", "loudness_target_lufs", "min_free_bytes"})

    def path(name: str, default: Path) -> Path:
        return (base_dir / r.typed(d, name, "storage", str, str(default))).resolve()

    return StorageConfig(
        path=path("path", StorageConfig.path),
        secret_file=path("secret_file", StorageConfig.secret_file),
        media_dir=path("media_dir", StorageConfig.media_dir),
        max_upload_bytes=r.int_range(d, "max_upload_bytes", "storage", StorageConfig.max_upload_bytes,
                                     1024, 2**34),
        max_upload_duration_s=r.float_range(d, "max_upload_duration_s", "storage",
                                            StorageConfig.max_upload_duration_s, 1.0, 4 * 3600.0),
        loudness_target_lufs=r.float_range(d, "loudness_target_lufs", "storage",
                                           StorageConfig.loudness_target_lufs, -40.0, -5.0),
        min_free_bytes=r.int_range(d, "min_free_bytes", "storage", StorageConfig.min_free_bytes, 0, 2**40),
    )


def _live(r: _Reader, value: Any, base_dir: Path) -> LiveConfig:
    d = r.mapping(value, "live", {"target_delay_ms", "max_delay_ms", "stall_timeout_ms", "recordings_dir",
                                  "recording_retention_days"})
    target = r.int_range(d, "target_delay_ms", "live", LiveConfig.target_delay_ms, 20, 10000)
    maximum = r.int_range(d, "max_delay_ms", "live", LiveConfig.max_delay_ms, 40, 30000)
    if maximum <= target:
        raise r.fail("live.max_delay_ms", f"must be more than live.target_delay_ms ({target})")
    return LiveConfig(
        target_delay_ms=target, max_delay_ms=maximum,
        stall_timeout_ms=r.int_range(d, "stall_timeout_ms", "live", LiveConfig.stall_timeout_ms, 100, 60000),
        recordings_dir=(base_dir / r.typed(d, "recordings_dir", "live", str, str(LiveConfig.recordings_dir))).resolve(),
        recording_retention_days=r.int_range(d, "recording_retention_days", "live",
                                             LiveConfig.recording_retention_days, 1, 3650),
    )


def _relay(r: _Reader, value: Any) -> RelayConfig:
    d = r.mapping(value, "relay", set(RelayConfig.__dataclass_fields__))
    k = "relay"
    return RelayConfig(
        allow_private=r.typed(d, "allow_private", k, bool, False),
        max_redirects=r.int_range(d, "max_redirects", k, RelayConfig.max_redirects, 0, 20),
        connect_timeout_s=r.float_range(d, "connect_timeout_s", k, RelayConfig.connect_timeout_s, 0.5, 120.0),
        read_timeout_s=r.float_range(d, "read_timeout_s", k, RelayConfig.read_timeout_s, 0.5, 120.0),
        max_playlist_bytes=r.int_range(d, "max_playlist_bytes", k, RelayConfig.max_playlist_bytes, 1024, 64 << 20),
        max_segment_bytes=r.int_range(d, "max_segment_bytes", k, RelayConfig.max_segment_bytes, 4096, 1 << 30),
        max_fetch_s=r.float_range(d, "max_fetch_s", k, RelayConfig.max_fetch_s, 1.0, 600.0),
        buffer_s=r.float_range(d, "buffer_s", k, RelayConfig.buffer_s, 0.1, 60.0),
        max_buffer_s=r.float_range(d, "max_buffer_s", k, RelayConfig.max_buffer_s, 2.0, 600.0),
        stall_timeout_ms=r.int_range(d, "stall_timeout_ms", k, RelayConfig.stall_timeout_ms, 100, 60000),
        backoff_max_s=r.float_range(d, "backoff_max_s", k, RelayConfig.backoff_max_s, 1.0, 3600.0),
        max_workers=r.int_range(d, "max_workers", k, RelayConfig.max_workers, 1, 256),
    )


def _alerts(r: _Reader, value: Any) -> AlertConfig:
    d = r.mapping(value, "alerts", {"operators_may_alert", "volume", "repeat", "gap_s", "cap_areas",
                                    "resume_within_s"})
    areas = d.get("cap_areas") or {}
    if not isinstance(areas, dict) or not all(isinstance(k, (str, int)) and isinstance(v, str)
                                              for k, v in areas.items()):
        raise r.fail("alerts.cap_areas", "expected a mapping of CAP geocodes to zone ids")
    return AlertConfig(
        operators_may_alert=r.typed(d, "operators_may_alert", "alerts", bool, False),
        volume=r.int_range(d, "volume", "alerts", AlertConfig.volume, 0, 100),
        repeat=r.int_range(d, "repeat", "alerts", AlertConfig.repeat, 1, 20),
        gap_s=r.float_range(d, "gap_s", "alerts", AlertConfig.gap_s, 0.0, 600.0),
        cap_areas=tuple((str(k), v) for k, v in areas.items()),
        resume_within_s=r.float_range(d, "resume_within_s", "alerts", AlertConfig.resume_within_s, 0.0, 86400.0),
    )


def _bulletins(r: _Reader, value: Any, zone_ids: set[str]) -> BulletinsConfig:
    d = r.mapping(value, "bulletins", {"self_approval_zones", "late_within_s"})
    zones = r.sequence(d.get("self_approval_zones"), "bulletins.self_approval_zones")
    for i, zone in enumerate(zones):
        if not isinstance(zone, str) or zone not in zone_ids:
            raise r.fail(f"bulletins.self_approval_zones[{i}]", f"no zone {zone!r} in this file's zones")
    return BulletinsConfig(
        self_approval_zones=tuple(zones),
        late_within_s=r.float_range(d, "late_within_s", "bulletins", BulletinsConfig.late_within_s, 0.0, 86400.0),
    )


def _api(r: _Reader, value: Any) -> ApiConfig:
    d = r.mapping(value, "api", {"token_days", "session_hours"})
    return ApiConfig(token_days=r.int_range(d, "token_days", "api", ApiConfig.token_days, 1, 3650),
                     session_hours=r.int_range(d, "session_hours", "api", ApiConfig.session_hours, 1, 24 * 30))


def _console(r: _Reader, value: Any) -> ConsoleConfig:
    d = r.mapping(value, "console", {"tile_url"})
    tile_url = r.typed(d, "tile_url", "console", str, None)
    if tile_url is not None and (not tile_url.startswith(("https://", "http://"))
                                 or not all(f"{{{part}}}" in tile_url for part in "zxy")):
        raise r.fail("console.tile_url", f"expected an http(s) URL with {{z}}, {{x}} and {{y}} in it, got {tile_url!r}")
    return ConsoleConfig(tile_url=tile_url)


def _users(r: _Reader, value: Any, zone_ids: set[str]) -> list[UserSeed]:
    result: list[UserSeed] = []
    for i, item in enumerate(r.sequence(value, "users")):
        k = f"users[{i}]"
        d = r.mapping(item, k, {"name", "role", "zones", "password"})
        name = r.ident(d, "name", k)
        if any(u.name == name for u in result):
            raise r.fail(f"{k}.name", f"duplicate user {name!r}")
        role = r.typed(d, "role", k, str, required=True)
        if role not in ("admin", "operator", "viewer"):
            raise r.fail(f"{k}.role", f"expected admin, operator or viewer, got {role!r}")
        zones = [str(z) for z in r.sequence(d.get("zones"), f"{k}.zones")]
        for zone in zones:
            if zone not in zone_ids:
                raise r.fail(f"{k}.zones", f"no zone with id {zone!r} is defined under zones")
        if role != "admin" and not zones:
            raise r.fail(f"{k}.zones", f"a {role} needs at least one zone")
        password = r.typed(d, "password", k, str, required=True)
        if len(password) < 4:
            raise r.fail(f"{k}.password", "expected at least 4 characters")
        result.append(UserSeed(name=name, role=role, zones=tuple(zones), password=password))
    return result


def _language(r: _Reader, value: Any, key: str) -> str:
    if not isinstance(value, str) or not LANGUAGE_PATTERN.fullmatch(value.lower()):
        raise r.fail(key, f"expected a language code such as vi, km or vi-VN, got {value!r}")
    return value.lower()


def _tts(r: _Reader, value: Any) -> TtsConfig:
    d = r.mapping(value, "tts", {"espeak_languages", "espeak_rate_wpm", "max_text_chars", "engines", "workers",
                                 "max_waiting"})
    espeak = tuple(_language(r, v, f"tts.espeak_languages[{i}]")
                   for i, v in enumerate(r.sequence(d.get("espeak_languages", list(TtsConfig.espeak_languages)),
                                                    "tts.espeak_languages")))
    engines: list[TtsEngineConfig] = []
    raw = d.get("engines") or {}
    if not isinstance(raw, dict):
        raise r.fail("tts.engines", f"expected a mapping of language codes to engines, got {_kind(raw)}")
    for language, item in raw.items():
        k = f"tts.engines.{language}"
        code = _language(r, language, k)
        if any(e.language == code for e in engines):
            raise r.fail(k, f"language {code!r} has two engines")
        e = r.mapping(item, k, {"command", "voice", "name", "timeout_s"})
        command = e.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command):
            raise r.fail(f"{k}.command", "expected the engine's argv as a non-empty list of non-empty strings, "
                                         'such as ["piper", "--model", "/opt/piper/vi.onnx", "--output_file", "-"]')
        for i, arg in enumerate(command):
            fields = _placeholders(arg)
            if fields is None or not fields <= {"language", "voice"}:
                raise r.fail(f"{k}.command[{i}]", f"{arg!r}: the only placeholders are {{language}} and {{voice}} "
                                                  "(a literal brace is written twice: {{)")
        engines.append(TtsEngineConfig(
            language=code, command=tuple(command), voice=r.typed(e, "voice", k, str),
            name=r.typed(e, "name", k, str),
            timeout_s=r.float_range(e, "timeout_s", k, TtsEngineConfig.timeout_s, 1.0, 600.0)))
    return TtsConfig(
        espeak_languages=espeak,
        espeak_rate_wpm=r.int_range(d, "espeak_rate_wpm", "tts", TtsConfig.espeak_rate_wpm, 80, 450),
        max_text_chars=r.int_range(d, "max_text_chars", "tts", TtsConfig.max_text_chars, 10, 100_000),
        engines=tuple(engines),
        workers=r.int_range(d, "workers", "tts", TtsConfig.workers, 1, 4),
        max_waiting=r.int_range(d, "max_waiting", "tts", TtsConfig.max_waiting, 0, 100),
    )


def _placeholders(arg: str) -> set[str] | None:
    """The {names} in one argument, or None if its braces do not parse."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(arg) if name is not None}
    except ValueError:
        return None
def _reports(r: _Reader, value: Any) -> ReportConfig:
    d = r.mapping(value, "reports", {"year_starts"})
    starts = r.typed(d, "year_starts", "reports", str, ReportConfig.year_starts)
    if not year_start_valid(starts):
        raise r.fail("reports.year_starts", f"expected a day of the year as MM-DD (such as 12-15 for 15 December; "
                                            f"not 02-29), got {starts!r}")
    return ReportConfig(year_starts=starts)


def year_start_valid(text: str) -> bool:
    """``MM-DD`` naming a day every year has (so not 29 February)."""
    if not re.fullmatch(r"\d\d-\d\d", text):
        return False
    try:
        datetime.date(2023, int(text[:2]), int(text[3:]))  # 2023: not a leap year
    except ValueError:
        return False
    return True


def _schedule(r: _Reader, value: Any) -> ScheduleConfig:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    d = r.mapping(value, "schedule", {"timezone"})
    tz = r.typed(d, "timezone", "schedule", str, ScheduleConfig.timezone)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise r.fail("schedule.timezone", f"unknown time zone {tz!r} (an IANA name such as Asia/Ho_Chi_Minh)") from None
    return ScheduleConfig(timezone=tz)


ZONE_KINDS = ("province", "district", "commune", "ward", "hamlet", "group")


def _zones(r: _Reader, value: Any) -> list[Zone]:
    zones: list[Zone] = []
    seen: set[str] = set()

    def walk(items: Any, key: str, parent: str | None) -> None:
        for i, item in enumerate(r.sequence(items, key)):
            k = f"{key}[{i}]"
            d = r.mapping(item, k, {"id", "name", "kind", "children"})
            zone_id = r.ident(d, "id", k)
            if zone_id in seen:
                raise r.fail(f"{k}.id", f"duplicate zone id {zone_id!r}")
            seen.add(zone_id)
            kind = r.typed(d, "kind", k, str, "province" if parent is None else "commune")
            if kind not in ZONE_KINDS:
                raise r.fail(f"{k}.kind", f"expected one of {', '.join(ZONE_KINDS)}, got {kind!r}")
            zones.append(Zone(id=zone_id, name=r.typed(d, "name", k, str, zone_id),
                              parent=parent, kind=kind))
            walk(d.get("children"), f"{k}.children", zone_id)

    walk(value, "zones", None)
    return zones


def _channels(r: _Reader, value: Any, zone_ids: set[str], base_dir: Path) -> list[ChannelConfig]:
    channels: list[ChannelConfig] = []
    for i, item in enumerate(r.sequence(value, "channels")):
        k = f"channels[{i}]"
        d = r.mapping(item, k, {"id", "name", "zone", "public", "multicast", "loop", "loop_gain_db"})
        channel_id = r.ident(d, "id", k)
        if any(c.id == channel_id for c in channels):
            raise r.fail(f"{k}.id", f"duplicate channel id {channel_id!r}")
        zone = r.typed(d, "zone", k, str, required=True)
        if zone not in zone_ids:
            raise r.fail(f"{k}.zone", f"no zone with id {zone!r} is defined under zones")
        loop_path: Path | None = None
        loop = r.typed(d, "loop", k, str)
        if loop is not None:
            loop_path = (base_dir / loop).resolve()
            if not loop_path.is_file():
                raise r.fail(f"{k}.loop", f"audio file {str(loop_path)!r} does not exist")
        channels.append(ChannelConfig(
            id=channel_id,
            name=r.typed(d, "name", k, str, channel_id),
            zone=zone,
            public=r.typed(d, "public", k, bool, True),
            multicast=_multicast(r, d.get("multicast"), f"{k}.multicast"),
            loop=loop_path,
            loop_gain_db=r.float_range(d, "loop_gain_db", k, 0.0, -60.0, 20.0),
        ))
    return channels


def _multicast(r: _Reader, value: Any, key: str) -> Multicast | None:
    if value is None:
        return None
    d = r.mapping(value, key, {"group", "port", "ttl"})
    group = r.typed(d, "group", key, str, required=True)
    try:
        address = ipaddress.ip_address(group)
    except ValueError:
        raise r.fail(f"{key}.group", f"expected a multicast IP address, got {group!r}") from None
    if not address.is_multicast:
        raise r.fail(f"{key}.group", f"{group} is not a multicast address (224.0.0.0/4 or ff00::/8)")
    return Multicast(
        group=group,
        port=r.int_range(d, "port", key, 5004, 1, 65535),
        ttl=r.int_range(d, "ttl", key, 1, 0, 255),
    )


def _loudspeakers(r: _Reader, value: Any, zones: list[Zone],
                  channels: list[ChannelConfig]) -> list[LoudspeakerConfig]:
    zone_ids = {z.id for z in zones}
    channel_ids = {c.id for c in channels}
    result: list[LoudspeakerConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(r.sequence(value, "loudspeakers")):
        k = f"loudspeakers[{i}]"
        d = r.mapping(item, k, {"id", "zone", "channel", "key"})
        speaker_id = r.ident(d, "id", k)
        if speaker_id in seen:
            raise r.fail(f"{k}.id", f"duplicate loudspeaker id {speaker_id!r}")
        seen.add(speaker_id)
        zone = r.typed(d, "zone", k, str, required=True)
        if zone not in zone_ids:
            raise r.fail(f"{k}.zone", f"no zone with id {zone!r} is defined under zones")
        channel = r.typed(d, "channel", k, str, required=True)
        if channel not in channel_ids:
            raise r.fail(f"{k}.channel", f"no channel with id {channel!r} is defined under channels")
        key = r.typed(d, "key", k, str, required=True)
        if len(key.encode("utf-8")) < MIN_KEY_LENGTH:
            raise r.fail(f"{k}.key", f"expected a secret of at least {MIN_KEY_LENGTH} bytes")
        result.append(LoudspeakerConfig(id=speaker_id, zone=zone, channel=channel, key=key))
    return result
