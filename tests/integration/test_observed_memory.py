"""The gauges read at each scrape (control/observed.py): loudspeakers per commune and online, the
loudspeakers of an alert on air and their acknowledgements, the class on air, free bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.memory import Server
from tests.integration.test_alerts_memory import live


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = server.http("GET", "/metrics", who=None)
    assert status == 200
    body = text.decode() if isinstance(text, bytes) else str(text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr("broadcaster.codecs.shared.shared_dir", lambda: tmp_path)
    return Server(tmp_path)


def test_loudspeakers_per_commune_and_online(server: Server) -> None:
    samples = scrape(server)
    assert value(samples, "broadcaster_commune_loudspeakers", commune="commune-a") == 2
    assert value(samples, "broadcaster_commune_loudspeakers", commune="commune-b") == 1
    assert value(samples, "broadcaster_commune_loudspeakers_online", commune="commune-a") == 0
    a1 = server.speaker("spk-a1", "ch-a", 40001)
    a1.subscribe()
    live(server, 1.5, a1)
    samples = scrape(server)
    assert value(samples, "broadcaster_commune_loudspeakers_online", commune="commune-a") == 1
    assert value(samples, "broadcaster_commune_loudspeakers_online", commune="commune-b") == 0
    assert value(samples, "broadcaster_channel_on_air", channel="ch-a", **{"class": "background"}) == 1
    assert value(samples, "broadcaster_channel_on_air", channel="ch-b", **{"class": "silent"}) == 1
    for store in ("database", "media", "recordings"):
        free = value(samples, "broadcaster_storage_free_bytes", store=store)
        assert free is not None and free > 0


def test_an_alert_on_air_counts_its_loudspeakers_and_their_acknowledgements(server: Server) -> None:
    a1, a2 = server.speaker("spk-a1", "ch-a", 40001), server.speaker("spk-a2", "ch-a", 40002)
    a1.subscribe()
    a2.subscribe()
    live(server, 1.5, a1, a2)
    status, alert = server.http("POST", "/api/v1/alerts", {
        "title": "Cảnh báo lũ", "zones": ["commune-a"], "priority": "khan-cap", "repeat": 3,
        "text": "Nước sông đang lên nhanh."})
    assert status == 201
    live(server, 1.0, a1)  # a2 keeps its subscription alive but never acknowledges
    live(server, 1.0, a2, ack=False)
    samples = scrape(server)
    assert value(samples, "broadcaster_alert_loudspeakers", commune="commune-a", state="commanded") == 2
    assert value(samples, "broadcaster_alert_loudspeakers", commune="commune-a", state="acknowledged") == 1
    assert value(samples, "broadcaster_channel_on_air", channel="ch-a", **{"class": "emergency"}) == 1
    assert server.http("POST", f"/api/v1/alerts/{alert['id']}/cancel")[0] in (200, 204)
    live(server, 1.0, a1, a2)
    samples = scrape(server)
    assert value(samples, "broadcaster_alert_loudspeakers", commune="commune-a", state="commanded") is None
    assert value(samples, "broadcaster_channel_on_air", channel="ch-a", **{"class": "emergency"}) == 0
