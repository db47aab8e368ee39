"""/api/v1/zones: the zone tree (creating zones is the province's, admin only)."""

from __future__ import annotations

from broadcaster.api.call import ApiError, Call, Reply, Route, facade
from broadcaster.api.models import Page, Zone, ZoneCreate
from broadcaster.control.auth import Action


async def list_zones(call: Call) -> Reply:
    limit, offset = call.paging()
    page = await call.storage.zones.page(call.visible(), limit, offset)
    return 200, Page[Zone].model_validate(page.as_dict())


async def create_zone(call: Call) -> Reply:
    call.authorize(Action.PROVINCE)
    body = call.body(ZoneCreate)
    if body.parent is not None and body.parent not in call.app.zones:
        raise ApiError(400, "bad_reference", f"parent: no zone {body.parent!r}")
    row = await call.storage.zones.create(call.actor, body.id, body.name, body.kind, body.parent)
    await facade(call.app.reload_zones)
    return 201, Zone.model_validate(row)


ROUTES = [
    Route("GET", "/api/v1/zones", list_zones, "List zones visible to the caller", Page[Zone], paged=True),
    Route("POST", "/api/v1/zones", create_zone, "Create a zone (admin)", Zone, 201, ZoneCreate, errors=(403, 409)),
]
