"""Origin → edge → loudspeaker with two real server processes (control/edge.py, docs/scaling.md):
the edge subscribes to the origin as a loudspeaker with a key of its own, and its own
loudspeaker hears the origin's programme; an edge with a wrong key gets nothing, and its
loudspeakers hear the edge's own (here silent) channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import soundfile
import yaml

from broadcaster.codecs.pcm import dominant_frequency, rms_dbfs
from tests.conftest import RunningServer, run_speaker, start_server, write_config

pytestmark = pytest.mark.solo  # asserts no frame missed or lost: run alone (Makefile)

EDGE_KEY = "edge-key-for-the-hue-node-0001"


def origin_config(tmp_path: Path) -> Path:
    """The origin: ch-a plays a 440 Hz loop; the edge is registered on it as a loudspeaker of ch-a."""
    config = write_config(tmp_path / "origin")
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["loudspeakers"].append({"id": "edge-1", "zone": "hamlet-a", "channel": "ch-a", "key": EDGE_KEY})
    config.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return config


def edge_config(tmp_path: Path, origin: RunningServer, key: str) -> Path:
    """The edge: the same channels with nothing of their own to play, ch-a taken from the origin."""
    return write_config(tmp_path / "edge", loops={"ch-a": None, "ch-b": None}, extra={"edge": {
        "origin": f"127.0.0.1:{origin.udp_port}", "channels": [{"channel": "ch-a", "device": "edge-1", "key": key}]}})


def heard(path: Path) -> tuple[float, float]:
    """Dominant frequency (0 for silence) and level of the last 3 s the loudspeaker played."""
    audio, _ = soundfile.read(str(path), dtype="float32")
    tail = audio[-3 * 48000:]
    level = rms_dbfs(tail)
    return (dominant_frequency(tail) if level > -60 else 0.0), level


def run_pair(tmp_path: Path, key: str) -> tuple[dict[str, Any], tuple[float, float], int]:
    (tmp_path / "origin").mkdir()
    (tmp_path / "edge").mkdir()
    origin = start_server(origin_config(tmp_path))
    edge = None
    try:
        edge = start_server(edge_config(tmp_path, origin, key))
        stats = run_speaker(edge, "spk-1", 8.0, out=tmp_path / "spk-1.wav")
        online = int(origin.get_json("/healthz")["loudspeakers_online"])
        return stats, heard(tmp_path / "spk-1.wav"), online
    finally:
        if edge is not None:
            edge.stop()
        origin.stop()


def test_a_loudspeaker_of_the_edge_hears_the_origins_programme(tmp_path: Path) -> None:
    stats, (frequency, level), origin_online = run_pair(tmp_path, EDGE_KEY)
    assert stats["acked"] and stats["lost"] == 0, stats
    assert abs(frequency - 440.0) < 3 and level > -30, (frequency, level)
    assert origin_online == 1, "the origin serves the edge as one loudspeaker, not the edge's loudspeakers"


def test_an_edge_with_a_wrong_key_gets_nothing_from_the_origin(tmp_path: Path) -> None:
    stats, (_, level), origin_online = run_pair(tmp_path, "not-the-key-of-this-edge-node")
    assert stats["acked"], "the edge's own loudspeaker is served (by the edge)"
    assert level < -60, "silence: the edge's own channel, nothing from the origin"
    assert origin_online == 0
