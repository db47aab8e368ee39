"""The memory of unplayable studio streams, on a fake clock."""

from __future__ import annotations

from broadcaster.control.unplayable import UnplayableSources

BUTT = ("application/ogg", "butt 0.1.40")


def test_the_same_console_is_refused_for_a_while_then_let_through() -> None:
    memory = UnplayableSources(hold_s=300.0)
    assert memory.refused("10.0.0.5", "/ingest/ch-a", BUTT, 0.0) is None
    memory.remember("10.0.0.5", "/ingest/ch-a", BUTT, "Ogg/Speex", 100.0)
    failure = memory.refused("10.0.0.5", "/ingest/ch-a", BUTT, 399.0)
    assert failure is not None and failure.seen == "Ogg/Speex" and failure.at == 100.0
    assert memory.refused("10.0.0.5", "/ingest/ch-a", BUTT, 401.0) is None, "held for hold_s only"
    assert len(memory) == 0, "an expired entry is dropped"


def test_another_mount_address_or_console_is_not_held_back() -> None:
    memory = UnplayableSources()
    memory.remember("10.0.0.5", "/ingest/ch-a", BUTT, "Ogg/Speex", 0.0)
    assert memory.refused("10.0.0.6", "/ingest/ch-a", BUTT, 1.0) is None
    assert memory.refused("10.0.0.5", "/ingest/ch-b", BUTT, 1.0) is None
    assert memory.refused("10.0.0.5", "/ingest/ch-a", ("audio/mpeg", "butt 0.1.40"), 1.0) is None, "settings changed"
    assert memory.refused("10.0.0.5", "/ingest/ch-a", ("application/ogg", "Mixxx"), 1.0) is None
    memory.forget("10.0.0.5", "/ingest/ch-a")
    assert memory.refused("10.0.0.5", "/ingest/ch-a", BUTT, 1.0) is None


def test_memory_is_bounded_oldest_first() -> None:
    memory = UnplayableSources(max_entries=100)
    for i in range(1000):
        memory.remember(f"10.0.{i // 256}.{i % 256}", "/ingest/ch-a", BUTT, "WAV", float(i))
    assert len(memory) == 100
    assert memory.refused("10.0.3.231", "/ingest/ch-a", BUTT, 1000.0) is not None  # the newest (999)
    assert memory.refused("10.0.0.0", "/ingest/ch-a", BUTT, 1000.0) is None
