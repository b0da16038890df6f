"""eval ab on bandit-allocated logs: caveat, no SRM check, decision at most hold (issue 20)."""

from __future__ import annotations

from pathlib import Path

from evaluation import AbConfig, Decision, analyze, read_logs
from evaluation.report import render_markdown
from evaluation.synth import ArmSpec, synthetic_experiment, write_jsonl
from schemas.controls import EXTRA_ALLOCATION


def _bandit_logs(tmp_path: Path, *, mark: bool) -> AbConfig:
    # a bandit moved traffic to the better arm: an 20/80 split, +30 % CTR
    arms = [ArmSpec("control", share=0.2), ArmSpec("treatment", share=0.8, ctr=0.13)]
    synth = synthetic_experiment(arms, users=20_000)
    if mark:
        for record in synth.exposures:
            record["context"]["extra"][EXTRA_ALLOCATION] = "bandit"
    write_jsonl(tmp_path / "x.jsonl", synth.exposures)
    write_jsonl(tmp_path / "o.jsonl", synth.outcomes)
    return AbConfig(mde=0.10)


def test_bandit_logs_skip_srm_report_the_caveat_and_hold(tmp_path: Path) -> None:
    config = _bandit_logs(tmp_path, mark=True)
    result = analyze(read_logs(tmp_path / "x.jsonl", tmp_path / "o.jsonl"), config)
    assert result.allocation == "bandit"
    assert result.srm.skipped.startswith("bandit allocation")
    assert not result.srm.detected
    assert result.srm.expected_shares == {}
    # a lift that would ship on a fixed split is held: the p-values are not valid here
    assert result.decision is Decision.HOLD, result.reasons
    (cmp,) = result.comparisons
    assert cmp.significant
    assert "not valid" in cmp.reasons[0]
    assert any("not a fixed-split test" in n for n in result.notes)
    assert result.prob_best["treatment"] > 0.99
    assert abs(sum(result.prob_best.values()) - 1.0) < 1e-3
    control, treatment = result.variants
    assert control.ci_low < control.value < control.ci_high
    assert treatment.ci_low < treatment.value < treatment.ci_high
    text = render_markdown(result)
    assert "SRM check skipped" in text
    assert "## Bandit allocation" in text
    assert "SRM DETECTED" not in text


def test_the_same_logs_without_the_flag_are_a_fixed_split_with_srm(tmp_path: Path) -> None:
    config = _bandit_logs(tmp_path, mark=False)
    result = analyze(read_logs(tmp_path / "x.jsonl", tmp_path / "o.jsonl"), config)
    assert result.allocation == "fixed"
    assert result.srm.skipped == ""
    assert result.srm.detected  # 20/80 against the default even split
    assert result.prob_best == {}
    assert result.decision is Decision.HOLD
    assert result.reasons[0].startswith("SRM detected")
