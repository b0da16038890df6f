"""evaluation.ab on known-answer synthetic experiments: the decision and its reasons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError
from evaluation import AbConfig, Correction, Decision, Logs, Metric, analyze, parse_split, read_logs
from evaluation.synth import ArmSpec, synthetic_experiment, write_jsonl


def _logs(tmp_path: Path, arms: Sequence[ArmSpec], users: int, **kwargs: Any) -> Logs:
    """Generate, write as JSON lines and read back (the path the CLI takes)."""
    synth = synthetic_experiment(arms, users=users, **kwargs)
    return read_logs(
        write_jsonl(tmp_path / "exposures.jsonl", synth.exposures),
        write_jsonl(tmp_path / "outcomes.jsonl", synth.outcomes),
    )


# 40k users x 2 requests, split 50/50: ~40k requests per arm; base CTR 0.10
ARM_USERS = 40_000


def test_aa_experiment_holds_without_srm(tmp_path: Path) -> None:
    # An A/A is "significant" for 5% of seeds at alpha 0.05 (test_eval_stats checks that
    # rate); the seed is fixed, so this one is reproducibly not among them.
    logs = _logs(tmp_path, [ArmSpec("control"), ArmSpec("treatment")], ARM_USERS)
    result = analyze(logs, AbConfig(mde=0.10))
    assert result.decision is Decision.HOLD
    assert not result.srm.detected
    assert result.srm.unit == "users"
    (cmp,) = result.comparisons
    assert not cmp.significant
    assert cmp.decision is Decision.HOLD
    assert any("not significant" in r for r in result.reasons)
    control, treatment = result.variants
    assert (control.name, treatment.name) == ("control", "treatment")
    assert 0.09 < control.value < 0.11
    assert control.ci_low < control.value < control.ci_high
    assert abs(control.requests - 40_000) < 1_000
    assert cmp.diff_low < 0 < cmp.diff_high


def test_planted_ten_percent_ctr_lift_ships(tmp_path: Path) -> None:
    logs = _logs(tmp_path, [ArmSpec("control"), ArmSpec("treatment", ctr=0.11)], ARM_USERS)
    result = analyze(logs, AbConfig(metric=Metric.CTR, mde=0.10, power=0.8))
    assert result.decision is Decision.SHIP, result.reasons
    assert result.winner == "treatment"
    (cmp,) = result.comparisons
    assert cmp.significant
    assert cmp.lift is not None
    assert 0.05 < cmp.lift < 0.15
    assert cmp.diff_low > 0
    assert cmp.achieved_power is not None
    assert cmp.achieved_power > 0.99
    assert cmp.required_per_arm is not None
    assert 14_000 < cmp.required_per_arm < 15_500
    assert not any(g.breached for g in cmp.guardrails)
    # the same data with a finer MDE is underpowered: significant, but held
    fine = analyze(logs, AbConfig(mde=0.03))
    assert fine.decision is Decision.HOLD
    assert any("underpowered" in r for r in fine.reasons)


def test_sample_ratio_mismatch_blocks_the_decision(tmp_path: Path) -> None:
    arms = [ArmSpec("control", share=0.55), ArmSpec("treatment", share=0.45, ctr=0.11)]
    logs = _logs(tmp_path, arms, 20_000)
    result = analyze(logs, AbConfig(mde=0.10, expected_split=parse_split("control=1,treatment=1")))
    assert result.srm.detected
    assert result.srm.p_value < 1e-6
    assert result.decision is Decision.HOLD
    assert result.winner is None
    assert result.reasons[0].startswith("SRM detected")
    (cmp,) = result.comparisons
    assert cmp.decision is Decision.HOLD
    assert cmp.reasons[:2] == ("blocked by trust checks", "would be ship")
    # the designed split decides what a mismatch is: 55/45 was intended here
    designed = analyze(
        logs, AbConfig(mde=0.10, expected_split={"control": 0.55, "treatment": 0.45})
    )
    assert not designed.srm.detected


def test_planted_ten_percent_ctr_drop_rolls_back(tmp_path: Path) -> None:
    logs = _logs(tmp_path, [ArmSpec("control"), ArmSpec("treatment", ctr=0.09)], ARM_USERS)
    result = analyze(logs, AbConfig(mde=0.10))
    assert result.decision is Decision.ROLLBACK
    assert result.comparisons[0].lift is not None
    assert result.comparisons[0].lift < -0.05
    assert "significant degradation" in result.reasons[0]


def test_guardrail_breach_rolls_back_a_winner(tmp_path: Path) -> None:
    arms = [
        ArmSpec("control", fallback_rate=0.01),
        ArmSpec("treatment", ctr=0.13, latency_ms=35.0, fallback_rate=0.05),
    ]
    result = analyze(_logs(tmp_path, arms, 5_000), AbConfig(mde=0.3))
    assert result.decision is Decision.ROLLBACK
    breached = {g.name for g in result.comparisons[0].guardrails if g.breached}
    assert breached == {"latency_p95_ms", "fallback_share"}
    assert all("guardrail breached" in r for r in result.reasons)


def test_three_arms_ship_the_winner_with_correction(tmp_path: Path) -> None:
    arms = [
        ArmSpec("control", share=1 / 3),
        ArmSpec("a", share=1 / 3, ctr=0.13),
        ArmSpec("b", share=1 / 3),
    ]
    logs = _logs(tmp_path, arms, 15_000)
    bh = analyze(logs, AbConfig(mde=0.2, correction=Correction.BH))
    bonf = analyze(logs, AbConfig(mde=0.2, correction=Correction.BONFERRONI))
    assert bh.decision is bonf.decision is Decision.SHIP
    assert bh.winner == bonf.winner == "a"
    by_name = {c.variant: c for c in bonf.comparisons}
    assert by_name["a"].p_adjusted == pytest.approx(min(1.0, 2 * by_name["a"].p_value))
    assert by_name["b"].decision is Decision.HOLD
    assert [v.name for v in bh.variants] == ["control", "a", "b"]


def test_revenue_uses_a_seeded_bootstrap(tmp_path: Path) -> None:
    arms = [ArmSpec("control"), ArmSpec("treatment", mean_value=45.0)]
    logs = _logs(tmp_path, arms, 10_000)
    config = AbConfig(metric="revenue", mde=0.5, n_boot=1000)  # type: ignore[arg-type]
    result = analyze(logs, config)
    assert result.decision is Decision.SHIP, result.reasons
    assert result.to_dict() == analyze(logs, config).to_dict()
    control = result.variants[0]
    assert control.value == pytest.approx(control.revenue_total / control.requests)
    assert control.ci_low < control.value < control.ci_high
    other_seed = analyze(logs, AbConfig(metric=Metric.REVENUE, mde=0.5, n_boot=1000, seed=9))
    assert other_seed.variants[0].ci_low != control.ci_low


def test_conversion_counts_purchases(tmp_path: Path) -> None:
    logs = _logs(tmp_path, [ArmSpec("control", purchase_rate=0.5), ArmSpec("treatment")], 2_000)
    result = analyze(logs, AbConfig(metric=Metric.CONVERSION, mde=0.5))
    control, treatment = result.variants
    assert control.value == control.purchase_requests / control.requests
    assert control.value > treatment.value


def test_low_join_rate_holds(tmp_path: Path) -> None:
    logs = _logs(
        tmp_path,
        [ArmSpec("control"), ArmSpec("treatment", ctr=0.2)],
        3_000,
        drop_exposure_share=0.2,
    )
    result = analyze(logs, AbConfig(mde=0.5))
    assert result.decision is Decision.HOLD
    assert any("join rate" in r for r in result.reasons)


def test_bad_configuration_is_a_config_error(tmp_path: Path) -> None:
    logs = _logs(tmp_path, [ArmSpec("control"), ArmSpec("treatment")], 200)
    with pytest.raises(ConfigError, match="control variant 'ctl'"):
        analyze(logs, AbConfig(control="ctl"))
    with pytest.raises(ConfigError, match="missing from the expected split"):
        analyze(logs, AbConfig(expected_split={"control": 0.5, "other": 0.5}))
    with pytest.raises(ConfigError, match="alpha"):
        AbConfig(alpha=1.5)
    with pytest.raises(ConfigError, match="power"):
        AbConfig(power=0.01)
    with pytest.raises(ConfigError, match="metric must be one of ctr, conversion, revenue"):
        AbConfig(metric="clicks")  # type: ignore[arg-type]
    single = _logs(tmp_path, [ArmSpec("control")], 100)
    with pytest.raises(ConfigError, match="two variants"):
        analyze(single, AbConfig())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("control=0.5,treatment=0.5", {"control": 0.5, "treatment": 0.5}),
        ("a=1, b=3", {"a": 0.25, "b": 0.75}),
    ],
)
def test_parse_split(text: str, expected: dict[str, float]) -> None:
    assert parse_split(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["control", "a=1", "a=x,b=1", "a=-1,b=1", "a=1,a=1", "=1,b=1"])
def test_parse_split_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_split(text)


def test_srm_counts_requests_when_assignment_is_not_per_user(tmp_path: Path) -> None:
    synth = synthetic_experiment([ArmSpec("control")], users=2_000, requests_per_user=4)
    for i, exposure in enumerate(synth.exposures):  # per-request assignment, 60/40
        exposure["variant"] = "control" if i % 5 < 3 else "treatment"
    logs = read_logs(
        write_jsonl(tmp_path / "e.jsonl", synth.exposures),
        write_jsonl(tmp_path / "o.jsonl", synth.outcomes),
    )
    result = analyze(logs, AbConfig())
    assert result.srm.unit == "requests"
    assert result.srm.observed == {"control": 4_800, "treatment": 3_200}
    assert result.srm.detected
    assert any("saw several variants" in n for n in result.notes)


def test_expected_variant_never_served_is_a_mismatch(tmp_path: Path) -> None:
    logs = _logs(tmp_path, [ArmSpec("control"), ArmSpec("treatment")], 3_000)
    result = analyze(logs, AbConfig(expected_split=parse_split("control=1,treatment=1,c=1")))
    assert result.srm.observed["c"] == 0
    assert result.srm.detected
    assert result.decision is Decision.HOLD
    assert result.notes == ("variant 'c' expected but never served",)
