"""``streamrec eval prequential``: real processor and recommender against the session's Redis.

Known-answer logs: session chains (item ``c{j}_{i}`` is followed by ``c{j}_{i+1}``) drowned in
a few very popular items, so co-visitation must find the chains and popularity cannot; a
synthetic MovieLens ``u.data`` with planted genres and series (see evaluation.synth_ratings).
Every run must leave no key of its throwaway prefix behind.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.errors import ConfigError
from core.settings import Settings
from evaluation.datasets import DatasetFormat
from evaluation.prequential import PrequentialSpec, Protocol, run_prequential
from evaluation.synth_ratings import RatingsSpec, write_udata
from tests.support import RunCli, stderr_lines

CHAINS = 12
CHAIN_LEN = 6
POPULAR = [f"p{i}" for i in range(4)]


def _sessions(rng: random.Random, first_id: int, count: int, start: float) -> list[str]:
    """TSV rows of ``count`` sessions: a walk along one chain, popular items slipped in."""
    rows: list[str] = []
    ts = start
    for offset in range(count):
        session = first_id + offset
        chain = rng.randrange(CHAINS)
        begin = rng.randrange(CHAIN_LEN - 2)
        for position in range(begin, min(CHAIN_LEN, begin + rng.randint(2, 4))):
            if rng.random() < 0.3:  # a popular detour, learned but never the chain's successor
                ts += rng.uniform(5, 60)
                rows.append(f"{session}\t{rng.choice(POPULAR)}\t{ts:.3f}")
            ts += rng.uniform(5, 60)
            rows.append(f"{session}\tc{chain}_{position}\t{ts:.3f}")
        ts += rng.uniform(60, 600)
    return rows


def _write_sessions(path: Path, rows: list[str]) -> Path:
    path.write_text("SessionId\tItemId\tTime\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _planted(tmp_path: Path) -> tuple[Path, Path, int]:
    """Training and test logs; returns the number of session next-item predictions."""
    rng = random.Random(11)
    train = _sessions(rng, 1, 400, 1_400_000_000.0)
    last_ts = float(train[-1].split("\t")[2])
    test = _sessions(rng, 10_000, 60, last_ts + 100)
    sessions = {row.split("\t")[0] for row in test}
    return (
        _write_sessions(tmp_path / "train.tsv", train),
        _write_sessions(tmp_path / "test.tsv", test),
        len(test) - len(sessions),
    )


async def _eval_keys(redis: Redis, settings: Settings) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{settings.key_prefix}.eval-*")]


@pytest.mark.parametrize("protocol", [Protocol.BATCH, Protocol.STREAMING])
async def test_session_protocols_find_the_chains(
    settings: Settings, redis: Redis, tmp_path: Path, protocol: Protocol
) -> None:
    train, test, predictions = _planted(tmp_path)
    spec = PrequentialSpec(DatasetFormat.SESSIONS, train, test, k=3, protocol=protocol)
    result = await run_prequential(settings, spec)
    assert result.streamrec.n == result.popularity.n == predictions
    # the successor of a chain item is always its co-visitation top neighbour; popularity's
    # top 3 are popular items, which are 30 % of a session's clicks at most
    assert result.streamrec.hr > 0.6
    assert result.streamrec.hr > 2 * result.popularity.hr
    assert result.streamrec.mrr > result.popularity.mrr
    assert 0 < result.streamrec.coverage <= 1
    info = result.settings
    assert info["protocol"] == protocol.value
    assert info["targets"] == "session next item"
    assert info["ranker"]["exclude_seen"] is False and info["ranker"]["self_neighbours"] is True
    assert info["learned"] == info["events"] - (len(test.read_text().splitlines()) - 1) * (
        protocol == Protocol.BATCH
    )
    assert info["key_prefix"].startswith(f"{settings.key_prefix}.eval-")
    assert await _eval_keys(redis, settings) == []


async def test_holdout_replays_the_end_of_the_log_like_a_test_file(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """``--holdout-days`` cut just before the test sessions == ``--test`` with those sessions."""
    train, test, predictions = _planted(tmp_path)
    train_rows = train.read_text().splitlines()[1:]
    test_rows = test.read_text().splitlines()[1:]
    whole = _write_sessions(tmp_path / "whole.tsv", train_rows + test_rows)
    last_train = max(float(row.split("\t")[2]) for row in train_rows)
    newest = max(float(row.split("\t")[2]) for row in test_rows)
    days = (newest - (last_train + 50.0)) / 86_400  # the cut falls in the 100 s gap
    for protocol in (Protocol.BATCH, Protocol.STREAMING):
        held = await run_prequential(
            settings,
            PrequentialSpec(DatasetFormat.SESSIONS, whole, holdout_days=days, protocol=protocol),
        )
        files = await run_prequential(
            settings, PrequentialSpec(DatasetFormat.SESSIONS, train, test, protocol=protocol)
        )
        assert held.streamrec.n == predictions
        # the same predictions; sums may run in another order (concurrent scoring)
        pairs = ((held.streamrec, files.streamrec), (held.popularity, files.popularity))
        for mine, theirs in pairs:
            assert mine.to_dict() == pytest.approx(theirs.to_dict(), rel=1e-12)
        assert held.settings["holdout"] == {
            "days": days,
            "cutoff_ts": pytest.approx(last_train + 50.0),
            "train_events": len(train_rows),
            "test_events": len(test_rows),
            "dropped": 0,
        }
        assert held.settings["targets"] == "session next item"
    assert await _eval_keys(redis, settings) == []


async def test_known_answer_batch(settings: Settings, tmp_path: Path) -> None:
    """A → B three times in training; test session A, B: B is the top answer at A."""
    train = _write_sessions(
        tmp_path / "train.tsv",
        [
            f"{s}\t{item}\t{1_400_000_000 + 10 * s + i}"
            for s in range(3)
            for i, item in enumerate(("A", "B"))
        ]
        + ["9\tC\t1400000100", "9\tD\t1400000101"],
    )
    test = _write_sessions(tmp_path / "test.tsv", ["50\tA\t1400001000", "50\tB\t1400001010"])
    spec = PrequentialSpec(DatasetFormat.SESSIONS, train, test, k=2, protocol=Protocol.BATCH)
    result = await run_prequential(settings, spec)
    assert result.streamrec.to_dict() == {
        "hr": 1.0,
        "mrr": 1.0,
        "ndcg": 1.0,
        "coverage": pytest.approx(2 / 4),
        "n": 1,
    }
    assert result.popularity.n == 1


async def test_synthetic_movielens_beats_popularity_twice(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """The MovieLens acceptance check on the planted-taste stand-in (no real file offline)."""
    udata = tmp_path / "ml" / "u.data"
    rows = write_udata(udata, RatingsSpec(users=40, seed=3))
    spec = PrequentialSpec(DatasetFormat.MOVIELENS, udata, k=10)
    result = await run_prequential(settings, spec)
    assert result.settings["protocol"] == "prequential"
    assert result.settings["events"] == rows
    # every rating but each user's first is a new item of a known user
    assert result.streamrec.n == result.popularity.n == rows - 40
    assert result.popularity.hr > 0
    assert result.streamrec.hr >= 2 * result.popularity.hr
    assert await _eval_keys(redis, settings) == []


async def test_bad_combinations_fail_before_reading(settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "missing.tsv"
    with pytest.raises(ConfigError, match="needs a test log"):
        await run_prequential(
            settings, PrequentialSpec(DatasetFormat.SESSIONS, missing, protocol=Protocol.BATCH)
        )
    with pytest.raises(ConfigError, match="cannot read"):
        await run_prequential(settings, PrequentialSpec(DatasetFormat.SESSIONS, missing))


def _sessions_cli(
    run_cli: RunCli, settings: Settings, *args: str
) -> subprocess.CompletedProcess[str]:
    """``streamrec eval prequential --format sessions ARGS`` against the session's Redis."""
    env = {"STREAMREC_REDIS_URL": settings.redis_url, "STREAMREC_KEY_PREFIX": settings.key_prefix}
    return run_cli("eval", "prequential", "--format", "sessions", *args, env=env)


def test_cli_json_and_errors(run_cli: RunCli, tmp_path: Path, settings: Settings) -> None:
    train, test, predictions = _planted(tmp_path)
    env = {"STREAMREC_REDIS_URL": settings.redis_url, "STREAMREC_KEY_PREFIX": settings.key_prefix}
    ok = _sessions_cli(run_cli, settings, str(train), "--test", str(test), "-k", "5", "--json")
    assert ok.returncode == 0, ok.stderr
    payload = json.loads(ok.stdout)
    assert set(payload) == {"streamrec", "popularity", "k", "intervals", "predictions", "settings"}
    assert payload["k"] == 5
    assert payload["predictions"] is None  # no --predictions
    for name in ("streamrec", "popularity"):
        assert set(payload[name]) == {
            "hr", "hr_ci", "mrr", "mrr_ci", "ndcg", "ndcg_ci", "coverage", "n",
        }  # fmt: skip
        assert payload[name]["n"] == predictions
        for metric in ("hr", "mrr", "ndcg"):
            low, high = payload[name][f"{metric}_ci"]
            assert low <= payload[name][metric] <= high
    assert payload["intervals"] == {
        "level": 0.95,
        "method": "percentile bootstrap",
        "unit": "session",
        "units": 60,
        "resamples": 1000,
        "seed": 0,
        "cpu_s": payload["intervals"]["cpu_s"],
    }
    assert payload["settings"]["protocol"] == "streaming"
    assert payload["streamrec"]["hr"] > payload["popularity"]["hr"]

    text = run_cli("eval", "prequential", "--format", "sessions", str(train), env=env)
    assert text.returncode == 0, text.stderr
    assert "streamrec" in text.stdout and "popularity" in text.stdout
    assert "95% intervals, percentile bootstrap over " in text.stdout

    bad = run_cli(
        "eval", "prequential", "--format", "sessions", str(train), "--protocol", "batch", env=env
    )
    assert bad.returncode == 2
    assert stderr_lines(bad) == [
        "streamrec: error: --protocol batch needs a test log: --test PATH or --holdout-days D"
    ]
    both = run_cli(
        "eval",
        "prequential",
        "--format",
        "sessions",
        str(train),
        "--test",
        str(test),
        "--holdout-days",
        "1",
        env=env,
    )
    assert both.returncode == 2
    assert stderr_lines(both) == [
        "streamrec: error: --holdout-days tests on the end of PATH itself: drop --test"
    ]
    too_long = run_cli(
        "eval", "prequential", "--format", "sessions", str(train), "--holdout-days", "400", env=env
    )
    assert too_long.returncode == 2
    assert stderr_lines(too_long)[0].startswith(
        "streamrec: error: --holdout-days 400 leaves no training events"
    )
    unknown = run_cli("eval", "prequential", "--format", "csv", str(train), env=env)
    assert unknown.returncode == 2
    assert len(stderr_lines(unknown)) == 1


def test_cli_predictions_and_compare(run_cli: RunCli, tmp_path: Path, settings: Settings) -> None:
    """Two runs with --predictions (batch, then streaming) over one test log, then compare."""
    train, test, predictions = _planted(tmp_path)
    runs: dict[str, Path] = {}
    for protocol in ("batch", "streaming"):
        done = _sessions_cli(
            run_cli,
            settings,
            str(train),
            "--test",
            str(test),
            "--protocol",
            protocol,
            "-k",
            "3",
            "--seed",
            "5",
            "--predictions",
            str(tmp_path / f"{protocol}.csv"),
            "--json",
        )
        assert done.returncode == 0, done.stderr
        payload = json.loads(done.stdout)
        written = payload["predictions"]
        assert written["path"] == str((tmp_path / f"{protocol}.csv").resolve())
        assert written["rows"] == predictions and written["format"] == "csv"
        assert payload["intervals"]["seed"] == 5
        rows = (tmp_path / f"{protocol}.csv").read_text(encoding="utf-8").splitlines()
        assert len(rows) == predictions + 1
        hits = [row.split(",")[4] for row in rows[1:]]  # streamrec_hit
        assert sum(map(float, hits)) / predictions == pytest.approx(payload["streamrec"]["hr"])
        runs[protocol] = tmp_path / f"{protocol}.json"
        runs[protocol].write_text(done.stdout, encoding="utf-8")

    compared = run_cli("eval", "compare", str(runs["batch"]), str(runs["streaming"]), "--json")
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    assert result["predictions"] == predictions and result["k"] == 3
    assert result["intervals"]["unit"] == "session" and result["intervals"]["units"] == 60
    for model in ("streamrec", "popularity"):
        for metric in ("hr", "mrr", "ndcg"):
            row = result[model][metric]
            assert row["diff"] == pytest.approx(row["b"] - row["a"])
            low, high = row["ci"]
            assert low <= row["diff"] <= high
            assert row["distinguishable"] == (low > 0 or high < 0)
    text = run_cli("eval", "compare", str(runs["batch"]), str(runs["streaming"]))
    assert text.returncode == 0 and "HR@3" in text.stdout and "from zero" in text.stdout

    # another cut of the log predicts other events: refused
    whole = _write_sessions(
        tmp_path / "whole.tsv",
        train.read_text().splitlines()[1:] + test.read_text().splitlines()[1:],
    )
    held = _sessions_cli(
        run_cli,
        settings,
        str(whole),
        "--holdout-days",
        "0.5",
        "-k",
        "3",
        "--predictions",
        str(tmp_path / "held.csv"),
        "--json",
    )
    assert held.returncode == 0, held.stderr
    (tmp_path / "held.json").write_text(held.stdout, encoding="utf-8")
    refused = run_cli("eval", "compare", str(runs["batch"]), str(tmp_path / "held.json"))
    assert refused.returncode == 2
    (line,) = stderr_lines(refused)
    assert line.startswith("streamrec: error: ") and "do not predict the same events" in line
