"""What control knows of the province, as one snapshot for a Prometheus scrape (metrics.Observed).

Read at each scrape, from state control already keeps (the loudspeaker registry and who is online,
the alerts on air, each channel's last status from the core), plus a statvfs per store. A scrape
costs one pass over the loudspeakers; nothing here runs per event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broadcaster.control.space import free_bytes
from broadcaster.core.mixer import Priority
from broadcaster.metrics import Observed

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer

CLASS_OF = {int(p): p.name.lower() for p in Priority}


def snapshot(app: BroadcastServer) -> Observed:
    tree = app.zones
    communes: dict[str, tuple[int, int]] = {}
    commune_of: dict[str, str] = {}
    for device in app.devices.known.values():
        commune = commune_of[device.id] = tree.commune_of(device.zone)
        total, up = communes.get(commune, (0, 0))
        communes[commune] = (total + 1, up + (device.id in app.devices.online))
    alerted: dict[str, tuple[int, int]] = {}
    for alert in app.alerts.active.values():
        for device_id in alert.commanded:
            commune = commune_of.get(device_id, "unknown")
            commanded, acked = alerted.get(commune, (0, 0))
            alerted[commune] = (commanded + 1, acked + (device_id in alert.acknowledged))
    on_air = {}
    for channel_id, channel in app.channels.items():
        top = (channel.status or {}).get("top")
        on_air[channel_id] = CLASS_OF.get(top, "silent") if top is not None else "silent"
    stores = {"database": app.config.storage.path.parent, "media": app.config.storage.media_dir,
              "recordings": app.config.live.recordings_dir}
    free = {}
    for store, path in stores.items():
        try:
            free[store] = free_bytes(path)
        except OSError:
            continue  # a store that cannot be asked is left out: the rule on it then sees no series
    return Observed(communes=communes, alert_loudspeakers=alerted, on_air=on_air, free_bytes=free)
