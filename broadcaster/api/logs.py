"""/api/v1/broadcasts and /api/v1/audit: the two logs, newest first, paged."""

from __future__ import annotations

from broadcaster.api.call import Call, Param, Reply, Route, time_query
from broadcaster.api.models import Audit, Broadcast, Page
from broadcaster.control.auth import Action
from broadcaster.storage.logs import LogQuery


def _query(call: Call) -> LogQuery:
    subtree = None
    if call.query.get("zone"):
        zone = call.query["zone"]
        call.authorize(Action.READ, zone)
        subtree = call.app.zones.subtree(zone)
    limit, offset = call.paging()
    return LogQuery(visible=call.visible(), subtree=subtree,
                    start=time_query(call.query, "from", 0.0) if call.query.get("from") else None,
                    end=time_query(call.query, "to", 0.0) if call.query.get("to") else None,
                    limit=limit, offset=offset)


async def list_broadcasts(call: Call) -> Reply:
    query = _query(call)
    await call.storage.logs.settle()  # entries the audio path queued a moment ago
    page = await call.storage.logs.broadcasts(query)
    return 200, Page[Broadcast].model_validate(page.as_dict())


async def list_audit(call: Call) -> Reply:
    page = await call.storage.logs.audits(_query(call))
    return 200, Page[Audit].model_validate(page.as_dict())


FILTERS = (Param("zone", "only this zone's subtree"),
           Param("from", "ISO 8601 date/time or Unix seconds (inclusive)"),
           Param("to", "ISO 8601 date/time or Unix seconds (exclusive)"))
ROUTES = [
    Route("GET", "/api/v1/broadcasts", list_broadcasts,
          "The broadcast log: every play with start, end, item, who and how it ended", Page[Broadcast],
          errors=(403,), query=FILTERS, paged=True),
    Route("GET", "/api/v1/audit", list_audit, "The audit log: every change, who, what, when, from where",
          Page[Audit], errors=(403,), query=FILTERS, paged=True),
]
