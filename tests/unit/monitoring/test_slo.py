"""monitoring.slo: rules built from the objectives, budget answers parsed, failures as reasons."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import yaml

from core.settings import Settings
from monitoring.health import HealthThresholds
from monitoring.levels import Level
from monitoring.monitor_io import FreshnessReading, OffsetSample
from monitoring.slo import (
    BEGIN,
    END,
    FAST,
    SLOW,
    BudgetReading,
    BudgetRow,
    Objectives,
    budget_text,
    parse_budget,
    read_error_budget,
    render_groups,
    replace_generated,
    rule_groups,
)
from monitoring.status_report import StatusInputs, budget_doc, budget_lines, build_status
from schemas.metrics import SLO_BUDGET_REMAINING, SLO_ERROR_RATIO, SLOS
from tests.integration.serving_support import free_port


def alerts(obj: Objectives) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_groups(obj) for r in g["rules"] if "alert" in r}


def test_objectives_come_from_the_settings() -> None:
    settings = Settings(slo_availability_objective=0.995, slo_latency_threshold_s=0.1)
    obj = Objectives.from_settings(settings)
    assert (obj.availability, obj.latency_threshold_s) == (0.995, 0.1)
    rules = alerts(obj)
    fast = rules["StreamrecSloAvailabilityFastBurn"]["expr"]
    assert fast.count("> 14.4 * (1 - 0.995)") == 2
    assert "ratio_rate1h" in fast and "ratio_rate5m" in fast
    slow = rules["StreamrecSloAvailabilitySlowBurn"]["expr"]
    assert slow.count("> 6 * (1 - 0.995)") == 2
    assert "ratio_rate6h" in slow and "ratio_rate30m" in slow
    records = [r for g in rule_groups(obj) for r in g["rules"] if "record" in r]
    latency = [
        r["expr"]
        for r in records
        if r["record"].startswith(SLO_ERROR_RATIO) and r["labels"]["slo"] == "latency"
    ]
    assert all('le="0.1"' in e for e in latency) and len(latency) == 5


def test_latency_threshold_must_be_a_bucket_bound() -> None:
    with pytest.raises(ValueError, match="bucket bound"):
        Objectives(latency_threshold_s=0.04)


def test_every_slo_has_both_burns_and_a_budget() -> None:
    rules = alerts(Objectives())
    assert len(rules) == 2 * len(SLOS)
    for rule in rules.values():
        burn = FAST if rule["labels"]["burn"] == "fast" else SLOW
        assert rule["labels"]["severity"] == burn.severity
        assert rule["annotations"]["runbook_url"].endswith("/slo-burn.md")
    budget = next(g for g in rule_groups(Objectives()) if g["name"] == "streamrec-slo-budget")
    slos = [r["labels"]["slo"] for r in budget["rules"] if r["record"] == SLO_BUDGET_REMAINING]
    assert slos == list(SLOS)


def test_rendered_section_is_the_rule_groups_as_yaml() -> None:
    obj = Objectives(freshness_max_age_s=120.0)
    text = "groups:\n" + render_groups(obj)
    assert yaml.safe_load(text) == {"groups": rule_groups(obj)}


def test_replace_generated_swaps_or_appends_the_section() -> None:
    head = "groups:\n  - name: other\n    rules: []\n"
    first = replace_generated(head, render_groups(Objectives()))
    assert first.startswith(head) and first.endswith(END + "\n")
    second = replace_generated(first + "# tail\n", render_groups(Objectives(latency=0.95)))
    assert second.count(BEGIN) == 1 and "(1 - 0.95)" in second and second.endswith("# tail\n")
    with pytest.raises(ValueError, match="markers"):
        replace_generated(f"{END}\n{BEGIN}\n", "x")


def sample(slo: str, value: str, surface: str | None = None) -> dict[str, Any]:
    labels = {"__name__": SLO_BUDGET_REMAINING, "slo": slo}
    if surface is not None:
        labels["surface"] = surface
    return {"metric": labels, "value": [1700000000.0, value]}


def answer(*samples: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(samples)}}


def test_parse_budget_orders_rows_and_keeps_nan() -> None:
    doc = answer(
        sample("latency", "0.25"),
        sample("availability", "-0.5", "pdp"),
        sample("availability", "0.9", "home"),
        sample("freshness", "NaN"),
        sample("made_up", "1"),
    )
    rows = parse_budget(doc, Objectives())
    assert [(r.slo, r.surface, r.remaining) for r in rows[:3]] == [
        ("availability", "home", 0.9),
        ("availability", "pdp", -0.5),
        ("latency", None, 0.25),
    ]
    assert rows[3].slo == "freshness" and math.isnan(rows[3].remaining)
    assert rows[0].objective == 0.999


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"status": "error", "error": "parse error"}, "parse error"),
        ([], "not a Prometheus API answer"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "instant"),
        (answer({"metric": {}, "value": [1, "1"]}), "bad sample"),
    ],
)
def test_parse_budget_rejects_other_answers(doc: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_budget(doc, Objectives())


class _Handler(BaseHTTPRequestHandler):
    reply: tuple[int, bytes] = (200, b"")
    paths: list[str] = []  # noqa: RUF012 (per test class, see prometheus fixture)

    def do_GET(self) -> None:
        self.paths.append(self.path)
        code, body = self.reply
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"paths": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


async def test_read_error_budget_asks_the_api(prometheus: tuple[str, type[_Handler]]) -> None:
    url, handler = prometheus
    handler.reply = (200, json.dumps(answer(sample("latency", "0.75"))).encode())
    reading = await read_error_budget(Settings(prometheus_url=url + "/"))
    assert reading == BudgetReading(url, (BudgetRow("latency", None, 0.75, 0.99),))
    assert handler.paths == ["/api/v1/query?query=streamrec%3Aslo_error_budget_remaining%3Aratio"]


async def test_read_error_budget_reports_http_errors(
    prometheus: tuple[str, type[_Handler]],
) -> None:
    url, handler = prometheus
    handler.reply = (400, b'{"status":"error","error":"bad_data: invalid parameter"}')
    reading = await read_error_budget(Settings(prometheus_url=url))
    assert reading.error == "HTTP 400: bad_data: invalid parameter" and not reading.rows
    handler.reply = (200, b"<html>not prometheus</html>")
    reading = await read_error_budget(Settings(prometheus_url=url))
    assert reading.error is not None and "Expecting value" in reading.error


async def test_read_error_budget_reports_unreachable_and_silent_servers() -> None:
    refused = await read_error_budget(Settings(prometheus_url=f"http://127.0.0.1:{free_port()}"))
    assert refused.error is not None and "refused" in refused.error.lower()
    # a socket that accepts and never answers: the timeout is the reason
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        reading = await read_error_budget(
            Settings(prometheus_url=f"http://127.0.0.1:{port}", prometheus_timeout_s=0.3)
        )
    assert reading.error == "no answer within 0.3 s"


async def test_no_prometheus_configured_is_said_plainly() -> None:
    reading = await read_error_budget(Settings(prometheus_url=None))
    assert reading == BudgetReading(None)
    (line,) = budget_lines(reading)
    assert line.level is Level.OK and "no Prometheus configured" in line.detail
    assert "STREAMREC_PROMETHEUS_URL" in line.detail


def test_budget_lines_levels_and_words() -> None:
    url = "http://prom:9090"
    rows = (
        BudgetRow("availability", "home", 0.42, 0.999),
        BudgetRow("latency", None, -0.1, 0.99),
        BudgetRow("freshness", None, math.nan, 0.99),
    )
    lines = budget_lines(BudgetReading(url, rows))
    assert [(ln.subject, ln.level) for ln in lines] == [
        ("slo/availability/home", Level.OK),
        ("slo/latency", Level.WARN),
        ("slo/freshness", Level.OK),
    ]
    assert lines[0].detail == "42.0 % of the 30d error budget left (objective 99.9 %)"
    assert "spent" in lines[1].detail and "no answers" in lines[2].detail
    assert budget_text(rows[0]) == lines[0].detail
    (down,) = budget_lines(BudgetReading(url, error="connection refused"))
    assert down.level is Level.WARN and down.detail.endswith("did not answer: connection refused")
    (empty,) = budget_lines(BudgetReading(url))
    assert empty.level is Level.WARN and "SLO rules not loaded" in empty.detail
    doc = budget_doc(BudgetReading(url, rows))
    assert doc is not None and doc["budgets"][2]["remaining"] is None
    assert budget_doc(None) is None


def test_prometheus_url_is_checked() -> None:
    with pytest.raises(ValueError, match="http"):
        Settings(prometheus_url="ftp://x")
    assert Settings(prometheus_url="").prometheus_url is None


def test_build_status_shows_the_budgets() -> None:
    inputs = StatusInputs(
        now=1000.0,
        group="g",
        offsets=OffsetSample(at=1000.0, ends={}, committed={}),
        later_ends=None,
        rate_window_s=0.0,
        freshness=FreshnessReading(newest_by_topic={}, last_write=990.0),
        workers=[{"instance": "w"}],
        monitors=[],
        freshness_topics=(),
        slo_budget=BudgetReading("http://p", (BudgetRow("latency", None, -0.2, 0.99),)),
    )
    status = build_status(HealthThresholds(), inputs)
    line = next(ln for ln in status.report.lines if ln.subject == "slo/latency")
    assert line.level is Level.WARN and line.value == -0.2
    assert status.doc["slo"]["budgets"] == [
        {"slo": "latency", "surface": None, "remaining": -0.2, "objective": 0.99}
    ]
    without = build_status(HealthThresholds(), replace(inputs, slo_budget=None))
    assert not [ln for ln in without.report.lines if ln.subject.startswith("slo")]
    assert without.doc["slo"] is None
