"""The core's cheap counting (metrics.Tally, HistogramTally) must expose exactly what
prometheus_client's own inc() and observe() would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from broadcaster import metrics

BUCKETS = (0.001, 0.01, 0.1)


def families(direct: bool, values: list[float]) -> bytes:
    registry = CollectorRegistry()
    counter = Counter("t_packets_total", "packets", ["channel"], registry=registry)
    histogram = Histogram("t_encode_seconds", "encode", ["channel"], buckets=BUCKETS, registry=registry)
    if direct:
        for value in values:
            counter.labels("a").inc(3)
            histogram.labels("a").observe(value)
    else:
        tally = metrics.Tally(counter.labels("a"))
        timings = metrics.HistogramTally(histogram.labels("a"))
        for value in values:
            tally.pending += 3
            timings.observe(value)
        metrics.flush_tallies()
    return b"\n".join(line for line in generate_latest(registry).splitlines() if b"_created" not in line)


def test_tallies_expose_what_direct_updates_would() -> None:
    values = [0.0005, 0.001, 0.002, 0.05, 0.1, 0.2, 7.0, 0.0]  # on bounds, between them, past the last
    assert families(False, values) == families(True, values)


def test_nothing_counted_until_flushed_and_nothing_twice() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_frames_total", "frames", registry=registry)
    tally = metrics.Tally(counter)
    tally.pending += 5
    assert registry.get_sample_value("t_frames_total") == 0
    metrics.flush_tallies()
    metrics.flush_tallies()
    assert registry.get_sample_value("t_frames_total") == 5


def test_expositions_of_two_core_processes_merge_into_one() -> None:
    def process(channel: str, missed: int, lateness: float) -> bytes:
        registry = CollectorRegistry()
        frames = Counter("t_frames_total", "frames", ["channel"], registry=registry)
        ticks = Counter("t_missed_total", "missed", registry=registry)
        late = Histogram("t_late_seconds", "late", buckets=BUCKETS, registry=registry)
        frames.labels(channel).inc(50)
        ticks.inc(missed)
        late.observe(lateness)
        return generate_latest(registry)

    from prometheus_client.parser import text_string_to_metric_families

    text = metrics.merge_expositions([process("a", 1, 0.005), process("b", 2, 0.05)]).decode()
    assert text.count("# TYPE t_frames_total counter") == 1
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(text) for s in family.samples}
    assert values[("t_frames_total", (("channel", "a"),))] == 50
    assert values[("t_frames_total", (("channel", "b"),))] == 50
    assert values[("t_missed_total", ())] == 3
    assert values[("t_late_seconds_bucket", (("le", "0.01"),))] == 1
    assert values[("t_late_seconds_bucket", (("le", "0.1"),))] == 2
    assert values[("t_late_seconds_count", ())] == 2
