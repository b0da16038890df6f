"""CPU accounting of `bench ingest`: µs per event and utilisation from two CPU clock readings."""

from __future__ import annotations

import pytest

from streamrec.bench.ingest import CpuClock, _redis_us_report, cpu_per_event
from streamrec.commands.bench import _redis_us_rows


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


def test_redis_us_report_puts_each_round_of_the_baseline_against_its_own_round() -> None:
    report = _redis_us_report([100.0, 80.0, 120.0], [200.0, 200.0, 180.0])
    assert report["current"] == {"min": 80.0, "median": 100.0, "max": 120.0}
    assert report["baseline"] == {"min": 180.0, "median": 200.0, "max": 200.0}
    assert report["reduction_per_round"] == pytest.approx([2.0, 2.5, 1.5])
    assert report["reduction"] == pytest.approx({"min": 1.5, "median": 2.0, "max": 2.5})
    rows = _redis_us_rows(report)
    assert rows[0].startswith("Redis CPU per event          100.0 µs (rounds: min 80.0")
    assert "2.00x less (rounds: 2.00, 2.50, 1.50)" in rows[1]


def test_redis_us_report_without_the_baseline_has_no_comparison() -> None:
    report = _redis_us_report([100.0], [])
    assert set(report) == {"current", "current_per_round"}
    assert len(_redis_us_rows(report)) == 1
