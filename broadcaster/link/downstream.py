"""This server as a commune under an upstream source information system.

Three parts, all on control's reactor, none of them ever in the audio loop:

- the **puller**: every ``poll_s`` it asks the upstream's feed (a signed
  GET of ``{url}/bulletins``) and takes it;
- the **webhook**: the upstream may push the same feed document (a signed
  POST to our ``/api/v1/link/bulletins``, api/link.py), taken the same way;
- the **reporter**: every ``report_s`` it sends the plays of the upstream's
  bulletins, the daily figures and (every ``inventory_s``) the loudspeaker
  inventory in one signed POST of ``{url}/report``.

Taking a feed is idempotent by the upstream's id and version (the
``link_imports`` table): the same feed after a restart, a push and a poll of
the same change, or a replayed push import nothing twice, and
``app.bulletins.receive`` is idempotent by (origin, origin id) besides. Area
codes map to zones through ``link.upstream.areas``; an unknown code is
counted and logged, and only that bulletin (if it has no known area left) is
skipped. The reporter's outbox is ``bulletin_plays`` past a persisted
cursor, advanced only once the upstream has acknowledged a report, and the
upstream stores plays by our play id: a restart neither loses nor repeats a
report.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.internet.task import LoopingCall

from broadcaster import metrics
from broadcaster.config import LinkConfig, LinkUpstream
from broadcaster.link import protocol
from broadcaster.link.client import LinkClient, LinkHttpError
from broadcaster.link.signing import Verifier
from broadcaster.storage import Actor
from broadcaster.storage.media import NewMedia

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.control.media import ProcessedMedia

log = logging.getLogger(__name__)
STALE_PLAY_S = 6 * 3600   # a play with no end after this long is reported as it is


class Downstream:
    def __init__(self, app: BroadcastServer, link: LinkConfig, client: LinkClient | None = None,
                 pool: Any = None) -> None:
        assert link.upstream is not None
        self.app = app
        self.config: LinkUpstream = link.upstream
        self.link = link
        self.client = client or LinkClient(app.reactor, app.wall, self.config.timeout_s, self.config.max_body_bytes,
                                              pool=pool)
        self.verifier = Verifier({self.config.id: self.config.secret})  # the upstream's pushes
        self.actor = Actor(f"link:{self.config.origin}")
        self.areas = dict(self.config.areas)
        self._codes = {zone: code for code, zone in self.config.areas} | dict(link.area_codes)
        self._take = DeferredLock()   # a push and a poll never import at the same time
        # What was said of a bulletin version that could not be taken: each poll tries it again (the
        # cause may pass), but it is logged and counted once per version and reason, not every poll.
        self._noted: dict[tuple[str, int], set[str]] = {}
        self._reporting = False
        self._inventory_at: float | None = None
        self.state: dict[str, Any] = {"last_poll_at": None, "last_report_at": None, "last_error": None,
                                      "last_error_at": None}
        self._loops: list[tuple[LoopingCall, float]] = []
        if self.config.poll_s > 0:
            self._loops.append((LoopingCall(self.poll), self.config.poll_s))
        self._loops.append((LoopingCall(self.report), self.config.report_s))
        for loop, _ in self._loops:
            loop.clock = app.reactor

    def start(self) -> None:
        for loop, interval in self._loops:
            loop.start(interval, now=True).addErrback(
                lambda f: log.error("link: a loop ended: %s", f.getTraceback()))

    def stop(self) -> None:
        for loop, _ in self._loops:
            if loop.running:
                loop.stop()
        self.client.stop()

    def _failed(self, what: str, message: str) -> None:
        self.state["last_error"], self.state["last_error_at"] = f"{what}: {message}", self.app.wall()
        log.warning("link: %s: %s", what, message)

    # --- bulletins down ---------------------------------------------------------------

    def poll(self) -> Deferred[None]:
        """One poll of the feed; failures are logged and counted, never raised (the loop goes on)."""
        return ensureDeferred(self._poll())

    async def _poll(self) -> None:
        try:
            reply = await self.client.request("GET", f"{self.config.url}/bulletins", self.config.id,
                                              self.config.secret)
            if reply.status != 200:
                metrics.link_pulls_total.labels("refused").inc()
                self._failed("poll", f"the upstream answered {reply.status}: {reply.body[:300]!r}")
                return
            document = reply.json()
        except LinkHttpError as exc:
            metrics.link_pulls_total.labels("failed").inc()
            self._failed("poll", str(exc))
            return
        self.state["last_poll_at"] = self.app.wall()
        metrics.link_pulls_total.labels("ok").inc()
        try:
            await self.take(document)
        except protocol.WireError as exc:
            self._failed("poll", f"the feed cannot be read: {exc}")
        except Exception as exc:  # noqa: BLE001 - one bad poll never ends the loop
            log.exception("link: taking the feed failed")
            self._failed("poll", f"taking the feed failed: {exc}")

    async def take(self, document: Any) -> dict[str, int]:
        """A feed document (polled or pushed) into our bulletins. WireError if it is not a feed;
        returns how many bulletins were new, updated, withdrawn, unchanged, skipped and failed."""
        feed = protocol.parse_feed(document)
        await self._take.acquire()
        try:
            return await self._take_feed(feed)
        finally:
            self._take.release()

    async def _take_feed(self, feed: protocol.Feed) -> dict[str, int]:
        counts = dict.fromkeys(("new", "updated", "withdrawn", "unchanged", "skipped", "failed"), 0)
        for problem in feed.problems:
            log.warning("link: a bulletin from %s was skipped: %s", self.config.origin, problem)
            counts["skipped"] += 1
        known = await self.app.storage.link.imports(self.config.origin)
        for b in feed.bulletins:
            result = await self._take_one(b, known.get(b.upstream_id))
            counts[result] += 1
        for result, n in counts.items():
            if n:
                metrics.link_imports_total.labels(result).inc(n)
        return counts

    async def _take_one(self, b: protocol.Bulletin, known: dict[str, Any] | None) -> str:
        state = "withdrawn" if b.withdrawn else "active"
        if known is not None and (known["version"] > b.version
                                  or known["version"] == b.version and known["state"] == state):
            return "unchanged"  # the same, or older (a poll's reply racing a push): never back to it
        desk = getattr(self.app, "bulletins", None)
        if desk is None:
            log.error("link: bulletin %s not taken: this server has no bulletin desk", b.upstream_id)
            return "failed"
        now = self.app.wall()
        try:
            if b.withdrawn:
                if known is None or known["state"] != "active":  # never had it: nothing to withdraw
                    await self.app.storage.link.record_import(self.config.origin, b.upstream_id, b.version,
                                                              state, None, now)
                    return "unchanged"
                await desk.withdraw_origin(self.config.origin, b.upstream_id, self.actor,
                                           f"withdrawn by {self.config.origin}")
                await self.app.storage.link.record_import(self.config.origin, b.upstream_id, b.version, state,
                                                          None, now)
                return "withdrawn"
            zones, unknown = protocol.map_areas(b.areas, self.areas)
            for code in unknown:
                if self._first(b, f"area {code}"):
                    metrics.link_area_unknown_total.inc()
                    log.warning("link: bulletin %s (%s): area code %r has no zone in link.upstream.areas; that area "
                                "is skipped", b.upstream_id, b.title, code)
            if not zones:
                if self._first(b, "no area"):
                    log.warning("link: bulletin %s (%s) skipped: none of its areas %s is ours", b.upstream_id,
                                b.title, ", ".join(b.areas))
                return "skipped"
            from broadcaster.storage.bulletins import BulletinContent

            media = None if b.audio is None else await self._recording(b, zones[0])
            content = BulletinContent(**protocol.content_fields(b, zones, self.config.origin, self.config.source,
                                                                media))
            row = await desk.receive(content, approve=self.config.auto_approve(b.klass), actor=self.actor)
            await self.app.storage.link.record_import(self.config.origin, b.upstream_id, b.version, state,
                                                      row["id"] if row else None, now)
            log.info("link: bulletin %s v%d from %s taken as %s (%s)", b.upstream_id, b.version, self.config.origin,
                     row["id"] if row else "?", row.get("state") if row else "?")
            return "new" if known is None else "updated"
        except Exception as exc:  # noqa: BLE001 - one bulletin refused never loses the others
            if self._first(b, f"failed {exc}"):
                log.warning("link: bulletin %s (%s) not taken: %s", b.upstream_id, b.title, exc)
            return "failed"

    def _first(self, b: protocol.Bulletin, what: str) -> bool:
        """Whether this is the first time ``what`` is said of this version of the bulletin."""
        if len(self._noted) > 10_000:
            self._noted.clear()
        said = self._noted.setdefault((b.upstream_id, b.version), set())
        if what in said:
            return False
        said.add(what)
        return True

    async def _recording(self, b: protocol.Bulletin, zone: str) -> str:
        """Our media item for the bulletin's recording: fetched (signed, from the configured upstream only,
        at most max_media_bytes), processed as an upload is (decoded, loudness-normalised, FLAC) in a
        worker, and stored; an upstream recording already fetched is not fetched again."""
        assert b.audio is not None
        storage = self.app.storage
        known = await storage.link.fetched_media(self.config.origin, b.audio.id)
        if known is not None:
            return known
        reply = await self.client.request("GET", f"{self.config.url}/{b.audio.path}", self.config.id,
                                          self.config.secret, max_body_bytes=self.config.max_media_bytes)
        if reply.status != 200:
            raise LinkHttpError(f"the recording {b.audio.path}: the upstream answered {reply.status}")
        settings = self.app.config.storage
        media_id = uuid.uuid4().hex
        path = Path(settings.media_dir) / f"{media_id}.flac"
        result = await self.app.workers.run(
            process_recording, reply.body, filename=f"{b.upstream_id}.flac", out_path=path,
            max_bytes=max(settings.max_upload_bytes, self.config.max_media_bytes),
            target_lufs=settings.loudness_target_lufs, max_duration_s=settings.max_upload_duration_s)
        item = NewMedia(id=media_id, zone=zone, title=f"{b.title} ({self.config.origin})"[:200],
                        filename=f"{b.upstream_id}.flac", path=str(path), duration_s=result.duration_s,
                        loudness_lufs=result.loudness_lufs, original_lufs=result.original_lufs, sha256=result.sha256,
                        size_bytes=result.size_bytes)
        try:
            await storage.media.add(self.actor, item)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        await storage.link.record_media(self.config.origin, b.audio.id, media_id, self.app.wall())
        return media_id

    # --- results up -------------------------------------------------------------------

    def area_of(self, zone: str) -> str:
        """The area code of a zone or of the nearest zone above it that has one (else the zone's id)."""
        for z in [zone, *self.app.zones.ancestors(zone)]:
            if z in self._codes:
                return self._codes[z]
        return zone

    def _days(self, last_done: str | None, now: float) -> tuple[list[tuple[str, float, float]], str]:
        """The local days to report: after the last complete day acknowledged, through today."""
        tz = ZoneInfo(self.app.config.schedule.timezone)
        today = datetime.fromtimestamp(now, tz).date()
        first = today - timedelta(days=1)
        if last_done:
            try:
                first = min(today, datetime.strptime(last_done, "%Y-%m-%d").date() + timedelta(days=1))
            except ValueError:
                pass
        first = max(first, today - timedelta(days=protocol.MAX_DAYS - 1))
        days = []
        day = first
        while day <= today:
            lo = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
            nxt = day + timedelta(days=1)
            days.append((day.isoformat(), lo, datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()))
            day = nxt
        return days, (today - timedelta(days=1)).isoformat()

    def report(self) -> Deferred[None]:
        """One report, unless one is still on its way; failures logged and counted, never raised."""
        if self._reporting:
            return ensureDeferred(_nothing())
        self._reporting = True

        def done(result: object) -> None:
            self._reporting = False

        return ensureDeferred(self._report()).addBoth(done)

    async def _report(self) -> None:
        storage = self.app.storage.link
        now = self.app.wall()
        try:
            cursors = await storage.cursors()
            after = int(cursors.get("plays", "0"))
            found, cursor = await storage.plays_after(after, self.config.origin, protocol.MAX_PLAYS,
                                                      now - STALE_PLAY_S)
            plays = [protocol.play_to_wire(r, r["origin_id"], self.area_of(r["zone"])) for r in found]
            inventory = None
            if self._inventory_at is None or now - self._inventory_at >= self.config.inventory_s:
                inventory = [protocol.loudspeaker_to_wire(
                    r, self.area_of(r["zone"]), r["id"] in self.app.devices.online,
                    getattr(self.app.devices.online.get(r["id"]), "last_seen", None))
                    for r in await storage.inventory(protocol.MAX_LOUDSPEAKERS)]
            days, done_through = self._days(cursors.get("daily"), now)
            figures = [protocol.day_to_wire(d, self.area_of(d["zone"])) for d in await storage.daily(days, now)]
            document = protocol.report_document(self.config.id, plays, inventory, figures, now)
            reply = await self.client.request("POST", f"{self.config.url}/report", self.config.id,
                                              self.config.secret, document)
        except LinkHttpError as exc:
            metrics.link_reports_sent_total.labels("failed").inc()
            self._failed("report", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            metrics.link_reports_sent_total.labels("failed").inc()
            log.exception("link: the report could not be made")
            self._failed("report", str(exc))
            return
        if reply.status != 200:
            metrics.link_reports_sent_total.labels("failed").inc()
            self._failed("report", f"the upstream answered {reply.status}: {reply.body[:300]!r}")
            return
        metrics.link_reports_sent_total.labels("ok").inc()
        # Acknowledged: only now does the outbox move on (a crash before this resends, and the
        # upstream stores a play sent twice once).
        await storage.set_cursors({"plays": str(cursor), "daily": done_through}, self.app.wall())
        if inventory is not None:
            self._inventory_at = now
        self.state["last_report_at"] = now
        if plays:
            log.info("link: %d plays reported to %s (cursor %d)", len(plays), self.config.origin, cursor)

    def describe(self) -> dict[str, Any]:
        return {"url": self.config.url, "id": self.config.id, "origin": self.config.origin,
                "poll_s": self.config.poll_s, "report_s": self.config.report_s, **self.state}


async def _nothing() -> None:
    return None


def process_recording(data: bytes, **settings: Any) -> ProcessedMedia:
    """In the worker process: an upstream recording, processed as an upload is."""
    from broadcaster.control.media import process_upload  # slow to import: in the worker only

    return process_upload(data, **settings)
