"""/api/v1/channels: the mix buses, as control describes them (listeners, live session)."""

from __future__ import annotations

from broadcaster.api.call import ApiError, Call, Param, Reply, Route, facade
from broadcaster.api.models import Channel, ChannelCreate, Page
from broadcaster.control.auth import Action


async def list_channels(call: Call) -> Reply:
    limit, offset = call.paging()
    page = await call.storage.channels.ids_page(call.visible(), limit, offset)
    items = [call.app.describe_channel(call.app.channels[r["id"]], detail=True) for r in page.items
             if r["id"] in call.app.channels]
    return 200, Page[Channel](items=[Channel.model_validate(i) for i in items], total=page.total, limit=limit,
                              offset=offset)


async def get_channel(call: Call) -> Reply:
    channel = call.app.channels.get(call.params["id"])
    if channel is None:
        raise ApiError(404, "not_found", f"no channel {call.params['id']!r}")
    call.authorize(Action.READ, channel.config.zone)
    return 200, Channel.model_validate(call.app.describe_channel(channel, detail=True))


async def create_channel(call: Call) -> Reply:
    call.authorize(Action.PROVINCE)
    body = call.body(ChannelCreate)
    if body.zone not in call.app.zones:
        raise ApiError(400, "bad_reference", f"zone: no zone {body.zone!r}")
    await call.storage.channels.create(call.actor, body.id, body.name, body.zone, body.public)
    await facade(call.app.reload_channels)
    return 201, Channel.model_validate(call.app.describe_channel(call.app.channels[body.id], detail=True))


ID = Param("id", "the channel's id", where="path", required=True)
ROUTES = [
    Route("GET", "/api/v1/channels", list_channels, "List channels visible to the caller", Page[Channel],
          paged=True),
    Route("POST", "/api/v1/channels", create_channel, "Create a channel (admin); it starts at once", Channel, 201,
          ChannelCreate, errors=(403, 409)),
    Route("GET", "/api/v1/channels/{id}", get_channel, "One channel", Channel, errors=(403, 404), query=(ID,)),
]
