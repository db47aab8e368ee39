"""Every Prometheus metric the server exports, declared in one place.

Labels are channels, transports and reasons: bounded sets. Never label by
loudspeaker or listener id: a province has thousands, and each label value is
a time series kept forever by Prometheus.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Metric, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

# Two registries because the real-time core runs in a process of its own: it
# exports CORE_REGISTRY (asked for at each scrape), control exports REGISTRY,
# and /metrics serves both. A metric lives in exactly one of them.
REGISTRY = CollectorRegistry(auto_describe=True)
CORE_REGISTRY = CollectorRegistry(auto_describe=True)

_TICK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.5, 1.0)
_ENCODE_BUCKETS = (0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01)

tick_lateness_seconds = Histogram(
    "broadcaster_tick_lateness_seconds",
    "How late each frame tick ran after its deadline; steady growth means the reactor is overloaded.",
    buckets=_TICK_BUCKETS, registry=CORE_REGISTRY)
ticks_missed_total = Counter(
    "broadcaster_ticks_missed_total",
    "Frame ticks skipped because the reactor fell further behind than the catch-up limit.",
    registry=CORE_REGISTRY)
encode_seconds = Histogram(
    "broadcaster_encode_seconds",
    "Time to mix and Opus-encode one frame of one channel.",
    ["channel"], buckets=_ENCODE_BUCKETS, registry=CORE_REGISTRY)
frames_encoded_total = Counter(
    "broadcaster_frames_encoded_total",
    "Frames encoded, once per channel per tick with any consumer (silence uses a cached packet and is not counted).",
    ["channel"], registry=CORE_REGISTRY)
frames_silent_total = Counter(
    "broadcaster_frames_silent_total",
    "Frames sent as the cached silence packet because nothing was playing on the channel.",
    ["channel"], registry=CORE_REGISTRY)
subscribers = Gauge(
    "broadcaster_subscribers",
    "Current subscribers of a channel by transport (rtp = loudspeakers, http = Ogg listeners).",
    ["channel", "transport"], registry=CORE_REGISTRY)
packets_sent_total = Counter(
    "broadcaster_packets_sent_total",
    "Packets (RTP datagrams, or Ogg pages for http) handed to the kernel.",
    ["channel", "transport"], registry=CORE_REGISTRY)
bytes_sent_total = Counter(
    "broadcaster_bytes_sent_total",
    "Payload bytes handed to the kernel, by channel and transport.",
    ["channel", "transport"], registry=CORE_REGISTRY)
send_errors_total = Counter(
    "broadcaster_send_errors_total",
    "Sends the kernel refused (buffer full, unreachable), by channel and transport.",
    ["channel", "transport"], registry=CORE_REGISTRY)
datagrams_rejected_total = Counter(
    "broadcaster_datagrams_rejected_total",
    "Subscription datagrams dropped without audio, by reason.",
    ["reason"], registry=CORE_REGISTRY)
subscriptions_total = Counter(
    "broadcaster_subscriptions_total",
    "Loudspeaker subscriptions that started (not keepalives of a running one).",
    ["channel"], registry=CORE_REGISTRY)
subscriptions_expired_total = Counter(
    "broadcaster_subscriptions_expired_total",
    "Loudspeaker subscriptions ended because keepalives stopped.",
    ["channel"], registry=CORE_REGISTRY)
loudspeakers_online = Gauge(
    "broadcaster_loudspeakers_online",
    "Loudspeakers with a live subscription.",
    registry=CORE_REGISTRY)
listeners_dropped_total = Counter(
    "broadcaster_listeners_dropped_total",
    "HTTP listeners disconnected by the server, by reason (slow = backlog over the limit).",
    ["channel", "reason"], registry=REGISTRY)
http_requests_total = Counter(
    "broadcaster_http_requests_total",
    "HTTP requests by route family and status code.",
    ["route", "code"], registry=REGISTRY)
uploads_rejected_total = Counter(
    "broadcaster_uploads_rejected_total",
    "Media uploads refused, by reason (too_large, undecodable, too_short, silent, ...).",
    ["reason"], registry=REGISTRY)
auth_failures_total = Counter(
    "broadcaster_auth_failures_total",
    "Requests with a token or password that did not authenticate, by interface.",
    ["interface"], registry=REGISTRY)
auth_limited_total = Counter(
    "broadcaster_auth_limited_total",
    "Requests refused (429) unchecked because their address failed too often lately, by interface.",
    ["interface"], registry=REGISTRY)
title_updates_total = Counter(
    "broadcaster_title_updates_total",
    "Title changes a studio or operator sent (/admin/metadata) and listeners were given, by channel.",
    ["channel"], registry=REGISTRY)
storage_flush_errors_total = Counter(
    "broadcaster_storage_flush_errors_total",
    "Batched log writes that failed and were kept for the next attempt.",
    registry=REGISTRY)
storage_pending_rows = Gauge(
    "broadcaster_storage_pending_rows",
    "Broadcast-log, session and other queued rows waiting to be written (grows while the disk is full).",
    registry=REGISTRY)
cookie_challenges_total = Counter(
    "broadcaster_cookie_challenges_total",
    "Authenticated subscriptions answered with a cookie to echo (first contact or a new address).",
    registry=CORE_REGISTRY)
live_sessions = Gauge(
    "broadcaster_live_sessions",
    "Studio sessions on air now.",
    registry=REGISTRY)
transcoders_refused_total = Counter(
    "broadcaster_transcoders_refused_total",
    "HLS playlists and MP3 streams refused (503) because http.max_transcoders encoders were running.",
    ["kind"], registry=REGISTRY)
event_streams = Gauge(
    "broadcaster_event_streams",
    "Open /api/v1/events streams (the console's overview, server-sent events).",
    registry=REGISTRY)
event_streams_dropped_total = Counter(
    "broadcaster_event_streams_dropped_total",
    "Event streams ended by the server, by reason (slow = backlog over the limit).",
    ["reason"], registry=REGISTRY)
event_streams_refused_total = Counter(
    "broadcaster_event_streams_refused_total",
    "Event streams refused with 429, by limit (user, address).",
    ["limit"], registry=REGISTRY)
relays_on_air = Gauge(
    "broadcaster_relays_on_air",
    "Relays playing now (scheduled or on demand), whether their upstream is up or not.",
    registry=REGISTRY)
relay_up = Gauge(
    "broadcaster_relay_up",
    "1 while a relay's upstream delivers audio, 0 while it is down (the channel plays its idle programme).",
    ["relay"], registry=REGISTRY)
relay_reconnects_total = Counter(
    "broadcaster_relay_reconnects_total",
    "Times a relay lost its upstream or failed to reach it and tried again.",
    ["relay"], registry=REGISTRY)
relay_buffer_seconds = Gauge(
    "broadcaster_relay_buffer_seconds",
    "Upstream audio buffered by a relay's worker ahead of playout.",
    ["relay"], registry=REGISTRY)
relay_bytes_total = Counter(
    "broadcaster_relay_bytes_total",
    "Bytes fetched from a relay's upstream (streams, playlists' segments).",
    ["relay"], registry=REGISTRY)
relay_refused_total = Counter(
    "broadcaster_relay_refused_total",
    "Relays refused for good: a private address, too many redirects, a playlist or segment over its limit.",
    registry=REGISTRY)
ingest_bytes_total = Counter(
    "broadcaster_ingest_bytes_total",
    "Bytes received from studio consoles, by stream format.",
    ["format"], registry=REGISTRY)
ingest_decode_errors_total = Counter(
    "broadcaster_ingest_decode_errors_total",
    "Damaged frames or pages in studio streams, skipped.",
    ["format"], registry=REGISTRY)
ingest_refused_total = Counter(
    "broadcaster_ingest_refused_total",
    "Studio sources refused, by reason (unauthenticated, forbidden, already_live, unknown_mount, ...).",
    ["reason"], registry=REGISTRY)
webcast_rejected_total = Counter(
    "broadcaster_webcast_rejected_total",
    "Webcast (WebSocket) clients closed for breaking the protocol, by reason (bad_handshake, bad_frame, "
    "unmasked, too_big, bad_utf8, bad_hello, timeout, early_audio, ...); ignored_* counts text messages "
    "after the hello that were ignored.",
    ["reason"], registry=REGISTRY)
live_buffer_seconds = Gauge(
    "broadcaster_live_buffer_seconds",
    "Audio held in a channel's live jitter buffer.",
    ["channel"], registry=CORE_REGISTRY)
live_underruns_total = Counter(
    "broadcaster_live_underruns_total",
    "Frames of a live session filled with silence because the studio's audio was late.",
    ["channel"], registry=CORE_REGISTRY)
live_overrun_seconds_total = Counter(
    "broadcaster_live_overrun_seconds_total",
    "Studio audio dropped because the live buffer was over its maximum.",
    ["channel"], registry=CORE_REGISTRY)
live_shed_seconds_total = Counter(
    "broadcaster_live_shed_seconds_total",
    "Studio audio dropped to catch up with live after a burst: pauses shortened, or in audio with no "
    "pause, 20 ms skipped with a crossfade (core/sources/live.py).",
    ["channel"], registry=CORE_REGISTRY)
programmes_total = Counter(
    "broadcaster_programmes_total",
    "Scheduled programme plays by outcome (started, completed, failed, skipped).",
    ["outcome"], registry=REGISTRY)
scheduler_lag_seconds = Histogram(
    "broadcaster_scheduler_lag_seconds",
    "How late a scheduled programme started after its start time.",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0), registry=REGISTRY)
bulletins_total = Counter(
    "broadcaster_bulletins_total",
    "Bulletin transitions by the state reached (created, submitted, approved, rejected, played, expired, "
    "withdrawn).",
    ["state"], registry=REGISTRY)
bulletin_plays_total = Counter(
    "broadcaster_bulletin_plays_total",
    "Bulletin slot plays by outcome (started, completed, preempted, cut, failed, cancelled, stopped).",
    ["outcome"], registry=REGISTRY)
alerts_total = Counter(
    "broadcaster_alerts_total",
    "Alerts started, by priority class.",
    ["priority"], registry=REGISTRY)
alert_latency_seconds = Histogram(
    "broadcaster_alert_latency_seconds",
    "From an alert being accepted to its first frame leaving the server, per target channel.",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.2, 0.5, 1.0), registry=CORE_REGISTRY)
tts_seconds = Histogram(
    "broadcaster_tts_seconds",
    "Time to synthesise an alert's text.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0), registry=REGISTRY)
speech_renders_total = Counter(
    "broadcaster_speech_renders_total",
    "Text rendered to speech (bulletins, previews, alerts), by engine and outcome (ok, failed, silent, "
    "too_long; no_voice and busy with engine \"none\").",
    ["engine", "outcome"], registry=REGISTRY)
speech_render_seconds = Histogram(
    "broadcaster_speech_render_seconds",
    "Time to render a text to normalised speech, by engine (the engine's run and the loudness gain).",
    ["engine"], buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0), registry=REGISTRY)
speaker_commands_total = Counter(
    "broadcaster_speaker_commands_total",
    "Commands sent to loudspeakers (amplifier and volume for alerts), and acknowledgements received.",
    ["event"], registry=REGISTRY)
cap_rejected_total = Counter(
    "broadcaster_cap_rejected_total",
    "CAP messages refused, by reason (malformed, unsafe_xml, not_cap, unsupported, missing, no_area, too_large, "
    "expired, not_yet_effective, duplicate, forbidden, not_found, bad_reference).",
    ["reason"], registry=REGISTRY)
connections_refused_total = Counter(
    "broadcaster_connections_refused_total",
    "HTTP-port connections closed before being read, by reason (per_address: over the per-address cap).",
    ["reason"], registry=REGISTRY)


# --- HLS and MP3 listener streams (control/transcode.py, hls.py, mp3.py) ----------

transcoders = Gauge(
    "broadcaster_transcoders",
    "AAC (hls) or MP3 (mp3) encoders running: one per channel and kind while anyone listens, never per listener.",
    ["kind"], registry=REGISTRY)
transcode_seconds = Histogram(
    "broadcaster_transcode_seconds",
    "Time to decode one Ogg page of a channel and re-encode it (hls: AAC and MPEG-TS; mp3), on the transcode thread.",
    ["kind"], buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), registry=REGISTRY)
transcode_pages_dropped_total = Counter(
    "broadcaster_transcode_pages_dropped_total",
    "Ogg pages not re-encoded because the transcode thread was behind (each is about a second of audio).",
    ["channel", "kind"], registry=REGISTRY)
hls_segments_total = Counter(
    "broadcaster_hls_segments_total",
    "HLS segments made, by channel.",
    ["channel"], registry=REGISTRY)
mp3_listeners = Gauge(
    "broadcaster_mp3_listeners",
    "Current MP3 listeners, by channel.",
    ["channel"], registry=REGISTRY)
transcoded_bytes_sent_total = Counter(
    "broadcaster_transcoded_bytes_sent_total",
    "Bytes of HLS segments and playlists (hls) and of MP3 streams (mp3) written to clients.",
    ["channel", "kind"], registry=REGISTRY)

# --- the province link (broadcaster/link/) ----------------------------------------

link_pulls_total = Counter(
    "broadcaster_link_pulls_total",
    "Polls of the upstream's bulletin feed, by outcome (ok, failed, refused: the upstream answered an error).",
    ["outcome"], registry=REGISTRY)
link_pushes_total = Counter(
    "broadcaster_link_pushes_total",
    "Bulletin feeds pushed to a downstream's webhook (sent, failed) and received from the upstream (received).",
    ["outcome"], registry=REGISTRY)
link_imports_total = Counter(
    "broadcaster_link_imports_total",
    "Upstream bulletins taken, by result (new, updated, withdrawn, unchanged, skipped: no known area or unreadable, "
    "failed: refused here).",
    ["result"], registry=REGISTRY)
link_area_unknown_total = Counter(
    "broadcaster_link_area_unknown_total",
    "Area codes in upstream bulletins with no zone in link.upstream.areas (skipped, each logged).",
    registry=REGISTRY)
link_reports_sent_total = Counter(
    "broadcaster_link_reports_sent_total",
    "Reports sent to the upstream (plays, inventory, daily figures), by outcome (ok, failed).",
    ["outcome"], registry=REGISTRY)
link_report_items_total = Counter(
    "broadcaster_link_report_items_total",
    "Items in reports received from downstream servers, by kind (play, new_play, loudspeaker, day, rejected).",
    ["kind"], registry=REGISTRY)
link_signature_rejected_total = Counter(
    "broadcaster_link_signature_rejected_total",
    "Link requests refused before any work, by reason (missing, malformed, unknown_key, stale, replay, "
    "bad_signature, busy, too_large).",
    ["reason"], registry=REGISTRY)

# --- cheap counting in the audio loop -------------------------------------------
#
# A prometheus_client inc() or observe() takes a lock and costs 2-9 µs; a channel
# counts five things a frame, which was a third of a channel-frame's Python time
# beside libopus (benchmarks/channels.py). The core counts in plain attributes
# and adds them to the metrics once a second and before each exposition
# (flush_tallies), so a scrape never misses more than the current second.

_TALLIES: list[Tally | HistogramTally] = []


class Tally:
    """A counter child's increments, kept as an int until flushed."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Counter) -> None:
        self.child = child
        self.pending = 0
        _TALLIES.append(self)

    def flush(self) -> None:
        if self.pending:
            self.child.inc(self.pending)
            self.pending = 0


class HistogramTally:
    """A histogram child's observations, counted per bucket until flushed."""

    __slots__ = ("child", "bounds", "counts", "total")

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        _TALLIES.append(self)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        # The child's own values, as observe() would leave them (its buckets are not cumulative).
        if any(self.counts):
            for i, count in enumerate(self.counts):
                if count:
                    self.child._buckets[i].inc(count)
                    self.counts[i] = 0
            self.child._sum.inc(self.total)
            self.total = 0.0


def flush_tallies() -> None:
    for tally in _TALLIES:
        tally.flush()


def merge_expositions(parts: list[bytes]) -> bytes:
    """The expositions of several core processes as one: each family once, and a sample
    two processes both export (a core-wide counter, a histogram bucket) summed, which is
    what one process would have counted; a ``_created`` time is the earliest."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for part in parts:
        for family in text_string_to_metric_families(part.decode("utf-8")):
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            samples = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in samples:
                    samples[key] = sample.value
                elif sample.name.endswith("_created"):
                    samples[key] = min(samples[key], sample.value)
                else:
                    samples[key] += sample.value
    for name, family in merged.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)

    class Merged:
        def collect(self) -> list[Metric]:
            return list(merged.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return generate_latest(registry)


# --- what control knows of the province, read at each scrape -------------------------------------


@dataclass(frozen=True)
class Observed:
    """Control's state as Prometheus sees it at a scrape (control/observed.py builds it): per commune,
    its loudspeakers and how many are online; per commune, the loudspeakers of alerts on air that were
    commanded and that acknowledged; per channel, the class on air; free bytes where the server writes."""

    communes: dict[str, tuple[int, int]] = field(default_factory=dict)         # commune -> (registered, online)
    alert_loudspeakers: dict[str, tuple[int, int]] = field(default_factory=dict)  # commune -> (commanded, acked)
    on_air: dict[str, str] = field(default_factory=dict)                       # channel -> class (or "silent")
    free_bytes: dict[str, int] = field(default_factory=dict)                   # store -> bytes free


ON_AIR_CLASSES = ("silent", "background", "scheduled", "live", "announcement", "emergency")


class ObservedCollector:
    """Gauges computed when scraped, from one snapshot: O(loudspeakers) once a scrape, never per
    event, and nothing kept between scrapes that could go stale."""

    def __init__(self) -> None:
        self.source: Callable[[], Observed] | None = None

    def describe(self) -> list[Metric]:
        return []  # dynamic: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        observed = self.source() if self.source is not None else Observed()
        registered = GaugeMetricFamily("broadcaster_commune_loudspeakers",
                                       "Loudspeakers registered in each commune (or ward).", labels=["commune"])
        online = GaugeMetricFamily("broadcaster_commune_loudspeakers_online",
                                   "Loudspeakers of each commune with a live subscription now.", labels=["commune"])
        for commune, (total, up) in sorted(observed.communes.items()):
            registered.add_metric([commune], total)
            online.add_metric([commune], up)
        alerted = GaugeMetricFamily("broadcaster_alert_loudspeakers",
                                    "Loudspeakers of alerts on air, by commune: commanded, and of them acknowledged.",
                                    labels=["commune", "state"])
        for commune, (commanded, acked) in sorted(observed.alert_loudspeakers.items()):
            alerted.add_metric([commune, "commanded"], commanded)
            alerted.add_metric([commune, "acknowledged"], acked)
        on_air = GaugeMetricFamily("broadcaster_channel_on_air",
                                   "1 for the priority class on air on each channel now (silent: nothing plays).",
                                   labels=["channel", "class"])
        for channel, playing in sorted(observed.on_air.items()):
            for name in ON_AIR_CLASSES:
                on_air.add_metric([channel, name], 1.0 if name == playing else 0.0)
        free = GaugeMetricFamily("broadcaster_storage_free_bytes",
                                 "Bytes free on the file system of each store (database, media, recordings).",
                                 labels=["store"])
        for store, value in sorted(observed.free_bytes.items()):
            free.add_metric([store], value)
        yield from (registered, online, alerted, on_air, free)


OBSERVED = ObservedCollector()
REGISTRY.register(OBSERVED)
