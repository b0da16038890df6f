"""streamrec status while a kill switch is on: one WARN line per switch, in the JSON too."""

from __future__ import annotations

from monitoring.health import HealthThresholds
from monitoring.levels import Level
from monitoring.monitor_io import FreshnessReading, OffsetSample
from monitoring.status_report import StatusInputs, build_status
from schemas.controls import KillSwitch

NOW = 1_700_000_000.0


def test_a_kill_switch_that_is_on_is_a_warn_line() -> None:
    switch = KillSwitch(tenant="shop", reason="bad model v7", who="otto", since=NOW - 300)
    inputs = StatusInputs(
        now=NOW,
        group="g",
        offsets=OffsetSample(at=NOW, ends={("outcomes", 0): 5}, committed={("outcomes", 0): 5}),
        later_ends=None,
        rate_window_s=0.0,
        freshness=FreshnessReading({"outcomes": NOW - 1}, last_write=NOW - 1),
        workers=[],
        monitors=[],
        freshness_topics=("outcomes",),
        kill_switches=[switch],
    )
    status = build_status(HealthThresholds(), inputs)
    (line,) = [x for x in status.doc["lines"] if x["subject"].startswith("kill_switch/")]
    assert line["subject"] == "kill_switch/shop/*"
    assert line["level"] == Level.WARN.name
    assert "by otto: bad model v7" in line["detail"] and "5 min" in line["detail"]
    assert status.exit_code >= 1
    assert status.doc["kill_switches"][0]["reason"] == "bad model v7"
    assert "kill_switch/shop/*" in status.render()
