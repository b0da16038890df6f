"""eval ab on exposures built by the server's own builder: planted failed answers in one arm
breach the error-rate and empty-answer guardrails; the holdback arm is the control."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

from evaluation import AbConfig, Decision, analyze, read_logs
from schemas.controls import HOLDBACK_VARIANT, AnswerError
from schemas.events import Context, Outcome, encode_event
from serving.exposure_log import PendingExposure, build_exposure

NOW = 1_700_000_000.0


def write_logs(
    tmp_path: Path, arms: dict[str, float], failed: dict[str, float], users: int = 3000
) -> tuple[Path, Path]:
    """Exposures as the server writes them (a share of failed answers per arm) + clicks."""
    rng = random.Random(7)
    exposures, outcomes = [], []
    names = list(arms)
    for u in range(users):
        variant = names[u % len(names)]
        for r in range(2):
            rid = f"r{u}-{r}"
            fails = rng.random() < failed.get(variant, 0.0)
            pending = PendingExposure(
                request_id=rid,
                user_id=f"u{u}",
                session_id=None,
                ts=NOW + u,
                items=[] if fails else [("a", 2.0), ("b", 1.0)],
                context=Context(tenant="shop", surface="home"),
                variant=variant,
                algo_version="v",
                latency_ms=2.0,
                stage="none",
                degraded=False,
                error=AnswerError.NO_STATE.value if fails else "",
            )
            exposures.append(encode_event(build_exposure(pending)))
            if not fails and rng.random() < arms[variant]:
                click = Outcome.model_validate(
                    {
                        "user_id": f"u{u}",
                        "item_id": "a",
                        "event_type": "click",
                        "ts": NOW + u + 1,
                        "request_id": rid,
                    }
                )
                outcomes.append(encode_event(click))
    exp, out = tmp_path / "exposures.jsonl", tmp_path / "outcomes.jsonl"
    exp.write_bytes(b"\n".join(exposures) + b"\n")
    out.write_bytes(b"\n".join(outcomes) + b"\n")
    return exp, out


def test_failed_answers_in_one_arm_breach_the_error_and_empty_guardrails(tmp_path: Path) -> None:
    exp, out = write_logs(tmp_path, {"control": 0.1, "treatment": 0.1}, {"treatment": 0.08})
    result = analyze(read_logs(exp, out), AbConfig())
    assert result.decision is Decision.HOLD  # flagged and held: the arm was not served as designed
    (cmp,) = result.comparisons
    breached = {g.name for g in cmp.guardrails if g.breached}
    assert {"error_share", "empty_share"} <= breached
    assert any("guardrail breached: error_share" in r for r in result.reasons)
    control, treatment = result.variants
    assert control.error_share == 0.0 and 0.06 < treatment.error_share < 0.10
    assert treatment.empty_share == treatment.error_share


def test_no_failures_no_breach(tmp_path: Path) -> None:
    exp, out = write_logs(tmp_path, {"control": 0.1, "treatment": 0.1}, {})
    (cmp,) = analyze(read_logs(exp, out), AbConfig()).comparisons
    assert not [g for g in cmp.guardrails if g.breached]


def test_holdback_arm_is_the_control_when_present(tmp_path: Path) -> None:
    exp, out = write_logs(
        tmp_path, {"control": 0.1, "treatment": 0.1, HOLDBACK_VARIANT: 0.1}, {}, users=3000
    )
    result = analyze(read_logs(exp, out), AbConfig(expected_split={"control": 1, "treatment": 1}))
    assert result.control == HOLDBACK_VARIANT
    assert sorted(c.variant for c in result.comparisons) == ["control", "treatment"]
    assert any("holdback" in n for n in result.notes)
    assert set(result.srm.observed) == {"control", "treatment"}
    explicit = analyze(read_logs(exp, out), AbConfig(control="control", prefer_holdback=False))
    assert explicit.control == "control"
    assert orjson.dumps(result.config["expected_split"])


def test_failed_answers_with_a_latency_breach_roll_back(tmp_path: Path) -> None:
    exp, out = write_logs(tmp_path, {"control": 0.1, "treatment": 0.1}, {"treatment": 0.08})
    slow = [
        line.replace(b'"latency_ms":2.0', b'"latency_ms":90.0')
        if b'"variant":"treatment"' in line
        else line
        for line in exp.read_bytes().splitlines()
    ]
    exp.write_bytes(b"\n".join(slow) + b"\n")
    result = analyze(read_logs(exp, out), AbConfig())
    breached = {g.name for g in result.comparisons[0].guardrails if g.breached}
    assert {"error_share", "latency_p95_ms"} <= breached
    assert result.decision is Decision.ROLLBACK
