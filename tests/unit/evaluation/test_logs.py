"""evaluation.logs: reading, per-line validation, duplicates, time order and the join."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from core.errors import ConfigError
from evaluation import Logs, read_logs, render_validation, validate_logs
from evaluation.arms import flag_set
from evaluation.logs import ExposureIndex, FileStats, JoinStatus, read_events, time_order
from evaluation.synth import ArmSpec, synthetic_experiment, write_jsonl
from schemas.events import Exposure, Outcome


def _exposure(
    request_id: str, items: list[str], ts: float = 1_700_000_000.0, **extra: Any
) -> dict[str, Any]:
    return {
        "schema": "exposure.v1",
        "request_id": request_id,
        "user_id": "u1",
        "ts": ts,
        "items": [{"item_id": it, "rank": r} for r, it in enumerate(items, start=1)],
        "variant": "control",
        **extra,
    }


def _outcome(
    item: str, request_id: str | None, ts: float = 1_700_000_010.0, event_type: str = "click"
) -> dict[str, Any]:
    rec: dict[str, Any] = {"user_id": "u1", "item_id": item, "event_type": event_type, "ts": ts}
    if request_id is not None:
        rec["request_id"] = request_id
    return rec


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_invalid_lines_are_reported_with_line_numbers_and_reasons(tmp_path: Path) -> None:
    bad_rank = _exposure("r2", ["a"])
    bad_rank["items"][0]["rank"] = 0
    path = _write_lines(
        tmp_path / "exposures.jsonl",
        [
            orjson.dumps(_exposure("r1", ["a"])).decode(),
            "",  # blank lines are skipped but keep the numbering
            orjson.dumps(bad_rank).decode(),
            '{"request_id": "r3", ',
            orjson.dumps({**_exposure("r4", ["a"]), "surprise": 1}).decode(),
        ],
    )
    events, file_stats = read_events(path, Exposure)
    assert [e.request_id for e in events] == ["r1"]
    assert (file_stats.lines, file_stats.valid, file_stats.invalid) == (4, 1, 3)
    messages = [str(e) for e in file_stats.errors]
    assert messages[0] == (f"{path}:3: items.0.rank: Input should be greater than or equal to 1")
    assert messages[1].startswith(f"{path}:4: Invalid JSON")
    assert messages[2] == f"{path}:5: surprise: Extra inputs are not permitted"


def test_error_list_is_bounded_but_counts_are_exact(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "o.jsonl", ["not json"] * 30)
    events, file_stats = read_events(path, Outcome, max_errors=5)
    assert events == []
    assert file_stats.invalid == 30
    assert len(file_stats.errors) == 5


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_events(tmp_path / "nope.jsonl", Exposure)


def test_time_order_counts_events_behind_the_running_maximum() -> None:
    stats = time_order([1.0, 2.0, 5.0, 3.0, 4.0, 6.0, 0.5])
    assert stats.out_of_order == 3
    assert stats.max_backwards_s == pytest.approx(5.5)
    assert time_order([1.0, 1.0, 2.0]).out_of_order == 0


def test_duplicates_distinguish_redelivery_from_conflicts() -> None:
    first = Exposure.model_validate(_exposure("r1", ["a", "b"]))
    again = Exposure.model_validate(_exposure("r1", ["a", "b"]))
    other = Exposure.model_validate(_exposure("r1", ["c"]))
    index = ExposureIndex.build([first, again, other])
    assert (index.exact_duplicates, index.conflicting_duplicates) == (1, 1)
    assert index.items["r1"] == {"a", "b"}  # the first occurrence wins
    assert index.duplicate_examples == ["r1", "r1"]


def test_join_classifies_every_outcome() -> None:
    index = ExposureIndex.build([Exposure.model_validate(_exposure("r1", ["a", "b"]))])
    status = [
        index.status(Outcome.model_validate(o))
        for o in (
            _outcome("a", "r1"),
            _outcome("z", "r1"),
            _outcome("a", "r9"),
            _outcome("a", None),
        )
    ]
    assert status == [
        JoinStatus.JOINED,
        JoinStatus.ITEM_NOT_SHOWN,
        JoinStatus.UNKNOWN_REQUEST,
        JoinStatus.UNATTRIBUTED,
    ]


def _logs_dir(
    tmp_path: Path, exposures: list[dict[str, Any]], outcomes: list[dict[str, Any]]
) -> tuple[Path, Path]:
    return (
        write_jsonl(tmp_path / "exposures.jsonl", exposures),
        write_jsonl(tmp_path / "outcomes.jsonl", outcomes),
    )


def test_validation_counts_the_join(tmp_path: Path) -> None:
    exposures = [_exposure("r1", ["a", "b"]), _exposure("r2", ["c"], ts=1_699_999_990.0)]
    outcomes = [
        _outcome("a", "r1"),
        _outcome("b", "r1", event_type="purchase"),
        _outcome("c", "r2"),
        _outcome("z", "r1"),
        _outcome("a", "r7"),
        _outcome("q", None),
        _outcome("c", "r2", ts=1_699_999_000.0),
    ]
    report = validate_logs(read_logs(*_logs_dir(tmp_path, exposures, outcomes)), join_floor=0.5)
    join = report.join
    assert (join.outcomes, join.attributed, join.joined) == (7, 6, 4)
    assert (join.unattributed, join.unknown_request, join.item_not_shown) == (1, 1, 1)
    assert join.before_exposure == 1
    assert join.join_rate == pytest.approx(4 / 6)
    assert report.exposure_order.out_of_order == 1
    assert report.exposure_order.max_backwards_s == pytest.approx(10.0)
    assert report.outcome_order.out_of_order == 1
    assert report.ok
    assert not validate_logs(
        read_logs(tmp_path / "exposures.jsonl", tmp_path / "outcomes.jsonl"), join_floor=0.7
    ).ok


def test_clean_synthetic_log_passes(tmp_path: Path) -> None:
    logs = synthetic_experiment(
        [ArmSpec("control"), ArmSpec("treatment")], users=1500, organic_per_request=0.2
    )
    report = validate_logs(read_logs(*_logs_dir(tmp_path, logs.exposures, logs.outcomes)))
    assert report.ok, report.failures
    assert report.join.join_rate == 1.0
    assert report.join.unattributed > 0
    assert "result: OK" in render_validation(report)
    assert report.to_dict()["ok"] is True


def test_missing_exposures_fail_the_join_floor(tmp_path: Path) -> None:
    logs = synthetic_experiment(
        [ArmSpec("control"), ArmSpec("treatment")], users=3000, drop_exposure_share=0.10, seed=4
    )
    report = validate_logs(read_logs(*_logs_dir(tmp_path, logs.exposures, logs.outcomes)))
    assert not report.ok
    rate = report.join.join_rate
    assert rate is not None
    assert 0.86 < rate < 0.94
    assert report.join.unknown_request == report.join.attributed - report.join.joined
    assert any("join rate" in f for f in report.failures)
    assert "FAIL" in render_validation(report)


def test_invalid_lines_fail_unless_allowed(tmp_path: Path) -> None:
    exp_path, out_path = _logs_dir(tmp_path, [_exposure("r1", ["a"])], [_outcome("a", "r1")])
    with out_path.open("a", encoding="utf-8") as fh:
        fh.write('{"user_id": "u1", "item_id": "a", "event_type": "buy", "ts": 1700000000}\n')
    logs = read_logs(exp_path, out_path)
    strict = validate_logs(logs)
    assert not strict.ok
    assert strict.failures == (f"1 invalid outcomes line(s) in {out_path}",)
    assert f"{out_path}:2: event_type: Value error, unknown event_type 'buy'" in (
        render_validation(strict)
    )
    lenient = validate_logs(logs, allow_invalid=True)
    assert lenient.ok
    assert lenient.warnings


def test_conflicting_duplicates_fail(tmp_path: Path) -> None:
    exposures = [_exposure("r1", ["a"]), _exposure("r1", ["a"]), _exposure("r1", ["b"])]
    report = validate_logs(read_logs(*_logs_dir(tmp_path, exposures, [_outcome("a", "r1")])))
    assert (report.exact_duplicates, report.conflicting_duplicates) == (1, 1)
    assert not report.ok


def test_no_attributed_outcome_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    report = validate_logs(
        read_logs(*_logs_dir(tmp_path, [_exposure("r1", ["a"])], [_outcome("a", None)]))
    )
    assert report.join.join_rate is None
    assert report.ok
    assert any("not measurable" in w for w in report.warnings)


def test_join_floor_is_checked() -> None:
    empty = Logs((), (), FileStats("e", 0, 0, 0), FileStats("o", 0, 0, 0))
    with pytest.raises(ConfigError, match="join floor"):
        validate_logs(empty, join_floor=1.5)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, False),
        ({"fallback": ""}, False),
        ({"fallback": "none"}, False),
        ({"fallback": "False"}, False),
        ({"fallback": "global_popularity"}, True),
        ({"fallback_stage": "last_known"}, True),
        ({"device": "ios"}, False),
    ],
)
def test_fallback_flag(extra: dict[str, str], expected: bool) -> None:
    assert flag_set(extra, ("fallback", "fallback_stage")) is expected
