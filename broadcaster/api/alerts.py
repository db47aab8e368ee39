"""/api/v1/alerts: alerts from the API and from CAP 1.2 messages.

Control (``app.alerts``) starts and cancels; this module validates, checks
scope, and for CAP checks the message's times (``control.cap.check_times``),
its target zones and the caller's right to alert them before anything is
cancelled or started, so a refused Update leaves the alert it would have
replaced on air. A CAP message already received (the same sender,
identifier and sent, on air or among the recent alerts) is refused with 409
``duplicate``: one message plays once. Every refusal of a CAP message is
counted in ``broadcaster_cap_rejected_total`` by its code.
"""

from __future__ import annotations

from typing import Any

from broadcaster import metrics
from broadcaster.api.call import ApiError, Call, Param, Reply, Route, facade
from broadcaster.api.models import Alert, AlertCreate, Cancelled, Page
from broadcaster.control.auth import Action

MAX_CAP_BYTES = 1024 * 1024


def _authorize_alert(call: Call, zones: list[str]) -> None:
    if call.principal.role != "admin" and not call.app.config.alerts.operators_may_alert:
        raise ApiError(403, "forbidden", "only the province (admin) may send alerts on this server "
                       "(alerts.operators_may_alert is off)")
    call.authorize(Action.WRITE, *zones)


def _check_alert(call: Call, zones: list[str]) -> list[str]:
    """The alert's target zones are known, the caller may alert them, and they have channels
    (returned); checked for a CAP Update before what it refers to is cancelled."""
    if not zones or not all(z in call.app.zones for z in zones):
        raise ApiError(400, "bad_reference", "zones: must be a non-empty list of zone ids")
    _authorize_alert(call, zones)
    channels = list(call.app.channels_in(zones))
    if not channels:
        raise ApiError(400, "bad_reference", "zones: the zones have no channel")
    return channels


async def _start_alert(call: Call, *, title: str, zones: list[str], text: str, media_id: str | None, language: str,
                       priority: str | int, policy: str, repeat: int, gap_s: float, volume: int,
                       cap_identifier: str | None = None, cap_sent: float | None = None,
                       expires_at: float | None = None) -> Alert:
    from broadcaster.core.mixer import PRIORITY_NAMES, Priority

    channels = _check_alert(call, zones)
    level = PRIORITY_NAMES.get(priority) if isinstance(priority, str) else Priority(priority)
    if level not in (Priority.ANNOUNCEMENT, Priority.EMERGENCY):
        raise ApiError(400, "bad_value", "priority: emergency (khan-cap, 50) or announcement (uu-tien, 40)")
    media_path = None
    if media_id:
        row = await call.storage.media.get(media_id)
        if row is None or not call.may_see(row["zone"]):
            raise ApiError(400, "bad_reference", f"media: no media item {media_id!r}")
        media_path = row["path"]  # decoded in a worker while the attention signal plays
    elif not text.strip():
        raise ApiError(400, "missing_field", "give 'text' to read aloud or 'media' to play")
    alert = await facade(call.app.alerts.start, title=title, zones=zones, channels=channels, priority=level,
                         policy=policy, repeat=repeat, gap_s=gap_s, created_by=call.principal.name, volume=volume,
                         text=text, media_path=media_path, media_id=media_id, language=language,
                         cap_identifier=cap_identifier, cap_sent=cap_sent, expires_at=expires_at,
                         audit=(call.principal.name, call.remote,
                                f"{level.name.lower()} {title} zones={','.join(zones)}"))
    return Alert.model_validate(call.app.alerts.describe(alert))


async def create_alert(call: Call) -> Reply:
    settings = call.app.config.alerts
    body = call.body(AlertCreate)
    return 201, await _start_alert(
        call, title=body.title, zones=body.zones, text=body.text, media_id=body.media, language=body.language,
        priority=body.priority, policy=body.policy, repeat=settings.repeat if body.repeat is None else body.repeat,
        gap_s=float(settings.gap_s if body.gap_s is None else body.gap_s),
        volume=settings.volume if body.volume is None else body.volume)


async def create_cap_alert(call: Call) -> Reply:
    """Every refusal of a CAP message is counted in broadcaster_cap_rejected_total by its code."""
    from broadcaster.control.cap import CapError

    try:
        return await _cap_alert(call)
    except CapError as exc:
        metrics.cap_rejected_total.labels(exc.code).inc()
        raise ApiError(413 if exc.code == "too_large" else 400, exc.code, str(exc)) from None
    except ApiError as exc:
        metrics.cap_rejected_total.labels(exc.code).inc()
        raise


def _duplicate(call: Call, alert: Any) -> ApiError:
    named = f"alert {alert.id} ({alert.ended or 'on air'})" if call.may_see(*alert.zones) else "an alert"
    return ApiError(409, "duplicate", f"this CAP message ({alert.cap_identifier}, the same <sent>) was already "
                    f"received and started {named}; a message plays once")


async def _cap_alert(call: Call) -> Reply:
    from broadcaster.control.alerts import DuplicateCap
    from broadcaster.control.cap import MAX_CAP_BYTES as CAP_LIMIT
    from broadcaster.control.cap import CapError, check_times, parse_cap, priority_of, spoken_text, zones_for

    if getattr(call.request, "too_large", False):  # the door kept none of it (web.site.BoundedRequest)
        raise CapError("too_large", f"CAP message is over the limit of {CAP_LIMIT} bytes")
    raw = call.request.content.read(MAX_CAP_BYTES + 1) if call.request.content else b""
    message = parse_cap(raw)
    if message.status == "Test":
        raise CapError("unsupported", "status Test: CAP says all recipients disregard it; nothing plays")
    cap_identifier, sent = f"{message.sender},{message.identifier}", message.sent.timestamp()
    if message.msg_type != "Cancel":  # before anything it references is touched
        duplicate = call.app.alerts.cap_duplicate(cap_identifier, sent)
        if duplicate is not None:
            raise _duplicate(call, duplicate)
    referenced = [a for sender, identifier, _sent in message.references
                  for a in call.app.alerts.active.values() if a.cap_identifier == f"{sender},{identifier}"]
    for alert in referenced:
        _authorize_alert(call, alert.zones)  # all checked before anything is cancelled
    if message.msg_type == "Cancel":
        cancelled = []
        for alert in referenced:
            await facade(call.app.alerts.cancel, alert.id, call.principal.name)
            cancelled.append(alert.id)
        if not cancelled:
            raise ApiError(404, "not_found", "no alert on air matches the message's references")
        await call.storage.logs.audit(call.actor, "alert.cancel", ",".join(cancelled), None,
                                      f"CAP {message.identifier}")
        return 200, Cancelled(cancelled=cancelled)
    if message.scope != "Public":
        raise CapError("unsupported", f"scope {message.scope!r}: only Public messages go to public loudspeakers")
    info = message.info_for()
    check_times(info, call.app.wall())  # expired or not yet effective: refused before anything changes
    zones = zones_for(info, dict(call.app.config.alerts.cap_areas))
    settings = call.app.config.alerts
    priority = priority_of(info)
    _check_alert(call, zones)  # a refused Update leaves what it refers to on air
    for alert in referenced:  # an Update replaces what it refers to
        await facade(call.app.alerts.cancel, alert.id, call.principal.name)
    try:
        return 201, await _start_alert(
            call, title=info.headline or info.event, zones=zones, text=spoken_text(message, info), media_id=None,
            language="vi" if info.language.lower().startswith("vi") else "en", priority=priority,
            policy="preempt", repeat=settings.repeat if priority == "emergency" else 1, gap_s=settings.gap_s,
            volume=settings.volume, cap_identifier=cap_identifier, cap_sent=sent,
            expires_at=info.expires.timestamp() if info.expires else None)
    except DuplicateCap as exc:  # the same message came in meanwhile
        raise _duplicate(call, exc.alert) from None


async def list_alerts(call: Call) -> Reply:
    visible = call.visible()
    items = [Alert.model_validate(call.app.alerts.describe(a)) for a in call.app.alerts.active.values()
             if visible is None or set(a.zones) <= visible]
    return 200, Page[Alert](items=items, total=len(items), limit=len(items), offset=0)


def _find(call: Call, *, recent: bool) -> Any:
    alert = call.app.alerts.active.get(call.params["id"])
    if alert is None and recent:
        alert = call.app.alerts.recent.get(call.params["id"])
    if alert is None or not call.may_see(*alert.zones):  # beyond the caller's zones: as if it were not
        where = "(the broadcast log has past ones)" if recent else "on air"
        raise ApiError(404, "not_found", f"no alert {call.params['id']!r} {where}")
    return alert


async def get_alert(call: Call) -> Reply:
    alert = _find(call, recent=True)
    return 200, Alert.model_validate(call.app.alerts.describe(alert))


async def cancel_alert(call: Call) -> Reply:
    alert = _find(call, recent=False)
    _authorize_alert(call, alert.zones)
    await facade(call.app.alerts.cancel, alert.id, call.principal.name)
    await call.storage.logs.audit(call.actor, "alert.cancel", alert.id, alert.zones[0])
    return 200, Alert.model_validate(call.app.alerts.describe(alert))


ID = Param("id", "the alert's id", where="path", required=True)
ROUTES = [
    Route("GET", "/api/v1/alerts", list_alerts, "Alerts on air now", Page[Alert]),
    Route("POST", "/api/v1/alerts", create_alert,
          "Send an alert to zones: the attention signal starts at the next frame, then the message (text read "
          "aloud, or a media item), repeated; loudspeakers are told to switch their amplifier on at the alert "
          "volume", Alert, 201, AlertCreate, errors=(403, 422)),
    Route("POST", "/api/v1/alerts/cap", create_cap_alert,
          "An OASIS CAP 1.2 message (XML body): Alert/Update start an alert on the zones its geocodes map to "
          "(alerts.cap_areas) if it is effective and not expired; Cancel stops the alerts it references. The same "
          "message (sender, identifier, sent) again is refused with 409 (duplicate) while its alert is on air or "
          "among the recent ones", Alert, 201,
          body_media="application/xml", errors=(400, 403, 404, 409, 413), also=((200, Cancelled),)),
    Route("GET", "/api/v1/alerts/{id}", get_alert,
          "One alert, on air or recently ended, with latency and acknowledgements", Alert, errors=(404,),
          query=(ID,)),
    Route("POST", "/api/v1/alerts/{id}/cancel", cancel_alert, "Stop an alert at once; loudspeakers are restored",
          Alert, errors=(403, 404), query=(ID,)),
]
