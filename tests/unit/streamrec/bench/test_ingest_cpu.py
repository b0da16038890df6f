"""CPU accounting of `bench ingest`: µs per event and utilisation from two CPU clock readings."""

from __future__ import annotations

import pytest

from streamrec.bench.ingest import CpuClock, cpu_per_event


def test_cpu_per_event_divides_each_clock_by_the_events_measured() -> None:
    start = CpuClock(process_s=10.0, redis_s=100.0)
    end = CpuClock(process_s=12.0, redis_s=100.5)
    cpu = cpu_per_event(start, end, events=20_000, elapsed_s=2.5)
    assert cpu["worker_us"] == pytest.approx(100.0)  # 2 s / 20,000 events
    assert cpu["redis_us"] == pytest.approx(25.0)  # 0.5 s / 20,000 events
    assert cpu["worker_utilisation"] == pytest.approx(0.8)  # 2 CPU s over 2.5 s of wall time


def test_cpu_per_event_of_an_empty_window_is_zero_not_a_division_error() -> None:
    clock = CpuClock(process_s=1.0, redis_s=1.0)
    assert cpu_per_event(clock, clock, events=0, elapsed_s=0.0) == {
        "worker_us": 0.0,
        "redis_us": 0.0,
        "worker_utilisation": 0.0,
    }
