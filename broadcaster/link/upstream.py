"""This server as the province: the feed it serves its downstream servers, and their reports.

Each downstream server (``link.downstream``) has an id, a shared secret and
the zones it serves. Its feed is every bulletin that may go down (approved,
scheduled or played; withdrawn ones for a week; local or province source)
whose zones meet its zones: a zone in its subtree (sent as that zone's area
code) or above it (sent as its own zones' codes). Area codes are
``link.area_codes`` (a zone with none is sent by its id). The feed is the
current state, not a change log: a downstream compares versions, so asking
twice, or after a restart of either side, changes nothing.

Downstreams with a ``webhook`` are pushed their feed when it changes: every
``push_s`` their feed is built and hashed, and sent if the hash differs from
the last one they acknowledged (kept in ``link_downstreams``, so a restart
does not push everything again). Pushing is an optimisation: a downstream
that polls gets the same feed.

Reports (plays, inventory, daily figures) are stored by the downstream's
own play id, loudspeaker id and (day, channel): the same report twice stores
nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall

from broadcaster import metrics
from broadcaster.config import LinkConfig, LinkDownstream
from broadcaster.link import protocol
from broadcaster.link.client import LinkClient, LinkHttpError
from broadcaster.link.signing import Verifier

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer

log = logging.getLogger(__name__)


class Upstream:
    def __init__(self, app: BroadcastServer, link: LinkConfig, client: LinkClient | None = None,
                 pool: Any = None) -> None:
        self.app = app
        self.link = link
        self.downstreams = {d.id: d for d in link.downstream}
        self.verifier = Verifier({d.id: d.secret for d in link.downstream})
        self.codes = dict(link.area_codes)
        self.client = client or LinkClient(app.reactor, app.wall, link.timeout_s, 1 << 20,
                                              pool=pool)
        self._pushed: dict[str, str | None] = {}
        self._pushing = False
        self._loop: LoopingCall | None = None
        if any(d.webhook for d in link.downstream):
            self._loop = LoopingCall(self.push)
            self._loop.clock = app.reactor

    def start(self) -> None:
        if self._loop is not None:
            self._loop.start(self.link.push_s, now=True).addErrback(
                lambda f: log.error("link: the push loop ended: %s", f.getTraceback()))

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.client.stop()

    # --- the feed ---------------------------------------------------------------------

    def code(self, zone: str) -> str:
        return self.codes.get(zone, zone)

    def areas_for(self, bulletin_zones: list[str], downstream: LinkDownstream) -> list[str]:
        """The area codes a bulletin reaches at this downstream (empty: not its bulletin)."""
        tree = self.app.zones
        areas: set[str] = set()
        for z in bulletin_zones:
            for dz in downstream.zones:
                if tree.within(z, (dz,)):  # the zone's depth, not a scan of every zone
                    areas.add(self.code(z))
                elif tree.within(dz, (z,)):
                    areas.add(self.code(dz))
        return sorted(areas)

    def feed(self, downstream: LinkDownstream) -> Deferred[dict[str, Any]]:
        return ensureDeferred(self._feed(downstream))

    async def _feed(self, downstream: LinkDownstream) -> dict[str, Any]:
        now = self.app.wall()
        items = []
        for row in await self.app.storage.link.feed_rows(now):
            areas = self.areas_for(row["zones"], downstream)
            if not areas:
                continue
            if row["state"] in protocol.ACTIVE_STATES and not (row.get("body") or row.get("summary")):
                continue  # audio only: protocol 1 carries text bulletins (docs/source-system.md)
            items.append(protocol.bulletin_to_wire(row, areas))
        return protocol.feed_document(self.link.id, self.app.config.schedule.timezone, items, now)

    # --- pushes -----------------------------------------------------------------------

    def push(self) -> Deferred[None]:
        if self._pushing:
            return ensureDeferred(_nothing())
        self._pushing = True

        def done(result: object) -> None:
            self._pushing = False

        return ensureDeferred(self._push_all()).addBoth(done)

    async def _push_all(self) -> None:
        for downstream in self.downstreams.values():
            if downstream.webhook:
                try:
                    await self._push(downstream)
                except Exception:  # noqa: BLE001 - one downstream never stops the others
                    log.exception("link: pushing to %s failed", downstream.id)

    async def _push(self, downstream: LinkDownstream) -> None:
        assert downstream.webhook is not None
        document = await self._feed(downstream)
        digest = hashlib.sha256(json.dumps(document["bulletins"], sort_keys=True).encode("utf-8")).hexdigest()
        if downstream.id not in self._pushed:
            self._pushed[downstream.id] = await self.app.storage.link.push_digest(downstream.id)
        if self._pushed[downstream.id] == digest:
            return
        try:
            reply = await self.client.request("POST", downstream.webhook, downstream.id, downstream.secret, document)
        except LinkHttpError as exc:
            metrics.link_pushes_total.labels("failed").inc()
            await self.app.storage.link.touch(downstream.id, "error", self.app.wall(), f"push: {exc}")
            return
        if reply.status != 200:
            metrics.link_pushes_total.labels("failed").inc()
            await self.app.storage.link.touch(downstream.id, "error", self.app.wall(),
                                              f"push: answered {reply.status}: {reply.body[:200]!r}")
            return
        metrics.link_pushes_total.labels("sent").inc()
        self._pushed[downstream.id] = digest
        await self.app.storage.link.touch(downstream.id, "push", self.app.wall(), digest=digest)

    # --- reports ----------------------------------------------------------------------

    async def take_report(self, downstream: str, document: Any) -> dict[str, int]:
        """A downstream's report into storage; WireError if it is not a report. Bad items are
        counted and logged, and the rest stored."""
        report = protocol.parse_report(document)
        for problem in report.problems:
            log.warning("link: a report item from %s was refused: %s", downstream, problem)
        if report.problems:
            metrics.link_report_items_total.labels("rejected").inc(len(report.problems))
        stored = await self.app.storage.link.store_report(downstream, report.plays, report.inventory, report.days,
                                                          self.app.wall())
        for kind, key in (("play", "plays"), ("new_play", "new_plays"), ("loudspeaker", "loudspeakers"),
                          ("day", "days")):
            if stored[key]:
                metrics.link_report_items_total.labels(kind).inc(stored[key])
        if stored["unknown_bulletin"]:
            metrics.link_report_items_total.labels("rejected").inc(stored["unknown_bulletin"])
            log.warning("link: %s reported %d plays of bulletins this server does not have; not stored", downstream,
                        stored["unknown_bulletin"])
        if stored["new_plays"]:
            log.info("link: %d new plays reported by %s", stored["new_plays"], downstream)
        unknown = stored.pop("unknown_bulletin")
        return {**stored, "rejected": len(report.problems) + unknown}


async def _nothing() -> None:
    return None
