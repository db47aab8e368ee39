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
