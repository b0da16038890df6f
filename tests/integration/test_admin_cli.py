"""``streamrec admin`` against a real server and Redis (issue 19): principals, the experiment
lifecycle (pause by an operator within seconds, promotion gated by `eval ab` on the
experiment's own logs), run-time settings, history and rollback — and one-line errors."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.settings import Settings
from evaluation.synth import ArmSpec, synthetic_experiment, write_jsonl
from schemas import recommender_pb2 as pb
from schemas.keyspace import Keyspace
from streamrec.cli import main
from tests.integration.serving_support import (
    TOKEN,
    ctx,
    env_for,
    recommender,
    running,
    seed,
    serving_settings,
    wait_for,
)
from tests.support import run_cli, stderr_lines

EXPERIMENT = {
    "name": "beta-test",
    "variants": [
        {"name": "control", "share": 0.5},
        {"name": "beta", "share": 0.5, "params": {"popularity_exponent": 1.0}},
    ],
}


def in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``streamrec ARGS`` through its entry point here, capturing output and exit code."""
    out, err = io.StringIO(), io.StringIO()
    code: int = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The result failed with exit 2 and exactly one stderr line holding ``expected``."""
    lines = stderr_lines(result)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1, lines
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


async def test_admin_cli_experiment_lifecycle_and_rollback(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    world = await seed(redis, Keyspace(settings.key_prefix))
    async with running(serving_settings(settings, tmp_path), log_exposures=False) as (srv, ch):

        async def cli(*args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
            """``streamrec admin`` in this process (its entry point; a subprocess per call
            costs seconds of imports on a loaded machine)."""
            return await asyncio.to_thread(
                in_process, "admin", "--addr", srv.address, "--token", token, *args
            )

        # one real subprocess: the console script, the token from the environment
        env = {**env_for(settings), "STREAMREC_ADMIN_TOKEN": TOKEN}
        whoami = await asyncio.to_thread(
            run_cli, "admin", "--addr", srv.address, "principals", "list", env=env
        )
        assert whoami.returncode == 0, whoami.stderr
        assert "no principals" in whoami.stdout

        async def variants(users: int = 40) -> Counter[str]:
            seen: Counter[str] = Counter()
            for i in range(users):
                reply = await recommender(ch).Recommend(
                    pb.RecommendRequest(user_id=f"user-{i}", k=2, context=ctx(world))
                )
                seen[reply.variant] += 1
            return seen

        # principals
        added = await cli("principals", "add", "otto", "--role", "operator")
        assert added.returncode == 0, added.stderr
        otto = added.stdout.splitlines()[1]
        assert otto.startswith("sr_")
        listed = await cli("principals", "list", "--json")
        assert [(p["name"], p["role"]) for p in json.loads(listed.stdout)] == [("otto", "operator")]

        # draft → running: both arms served
        spec = tmp_path / "experiment.json"
        spec.write_text(json.dumps(EXPERIMENT))
        created = await cli("experiments", "create", str(spec), "--reason", "try beta")
        assert created.returncode == 0, created.stderr
        assert "beta-test" in created.stdout and "draft" in created.stdout
        assert (await cli("experiments", "start", "beta-test")).returncode == 0

        async def both_arms() -> bool:
            return set(await variants()) == {"control", "beta"}

        assert await wait_for(both_arms)

        # an operator may pause (everyone gets control within the refresh) but not configure
        started = time.monotonic()
        paused = await cli("experiments", "pause", "beta-test", "--reason", "spike", token=otto)
        assert paused.returncode == 0, paused.stderr

        async def all_control() -> bool:
            return set(await variants()) == {"control"}

        assert await wait_for(all_control)
        print(f"pause effective after {time.monotonic() - started:.2f} s")
        one_line_error(
            await cli("config", "set", "ranker_max_anchors=3", "--reason", "x", token=otto),
            "SetConfig: principal 'otto' (operator) may not SetConfig: needs admin",
        )
        one_line_error(
            await cli("history", token="sr_wrong"), "unknown admin token", "STREAMREC_ADMIN_TOKEN"
        )

        # promotion: refused without evidence, with too few users, granted on ship
        one_line_error(await cli("experiments", "promote", "beta-test"), "--force")
        few = synthetic_experiment(
            [ArmSpec("control"), ArmSpec("beta")], users=20, start_ts=time.time()
        )
        small = (
            write_jsonl(tmp_path / "few-exp.jsonl", few.exposures),
            write_jsonl(tmp_path / "few-out.jsonl", few.outcomes),
        )
        one_line_error(
            await cli(
                "experiments", "promote", "beta-test", "--exposures", str(small[0]),
                "--outcomes", str(small[1]),
            ),
            "not promoting 'beta-test': too few users to decide",
            "at least 30 per arm",
        )  # fmt: skip
        ship = synthetic_experiment(
            [ArmSpec("control", ctr=0.10), ArmSpec("beta", ctr=0.20)],
            users=2000,
            start_ts=time.time(),
        )
        logs = (
            write_jsonl(tmp_path / "exp.jsonl", ship.exposures),
            write_jsonl(tmp_path / "out.jsonl", ship.outcomes),
        )
        promoted = await cli(
            "experiments", "promote", "beta-test", "--exposures", str(logs[0]),
            "--outcomes", str(logs[1]), "--mde", "0.3", "--json",
        )  # fmt: skip
        assert promoted.returncode == 0, promoted.stderr
        info = json.loads(promoted.stdout)
        assert (info["status"], info["promoted_variant"]) == ("promoted", "beta")
        assert info["decision"] == "eval ab: ship beta"

        async def all_beta() -> bool:
            return set(await variants()) == {"beta"}

        assert await wait_for(all_beta)

        # history and rollback through the CLI: back to the paused experiment
        history = json.loads((await cli("history", "--kind", "experiments", "--json")).stdout)
        actions = [(v["action"], v["author"]) for v in history["versions"]]
        assert actions == [
            ("promote_experiment", "bootstrap-admin"),
            ("pause_experiment", "otto"),
            ("start_experiment", "bootstrap-admin"),
            ("create_experiment", "bootstrap-admin"),
        ]
        before_promotion = history["versions"][1]["version"]
        diff = await cli("diff", str(before_promotion), str(history["current"]))
        assert 'experiments.beta-test.status: "paused" -> "promoted"' in diff.stdout
        one_line_error(await cli("rollback", str(before_promotion), "--reason", " "), "--reason")
        rolled = await cli("rollback", str(before_promotion), "--reason", "promoted too early")
        assert rolled.returncode == 0, rolled.stderr
        assert await wait_for(all_control)
        listed_exps = json.loads((await cli("experiments", "list", "--json")).stdout)
        assert [(e["name"], e["status"]) for e in listed_exps] == [("beta-test", "paused")]

        # run-time settings from a tune-style file; static keys refused unless skipped
        tuned = tmp_path / "tuned.toml"
        tuned.write_text("covis_window = 20\nranker_max_anchors = 4\n")
        one_line_error(
            await cli("config", "apply", str(tuned), "--reason", "tuned"),
            "not changeable at run time: covis_window",
        )
        applied = await cli("config", "apply", str(tuned), "--reason", "tuned", "--skip-static")
        assert applied.returncode == 0, applied.stderr
        assert "config.ranker_max_anchors: (absent) -> 4" in applied.stdout
        assert "skipped (static, need a restart): covis_window" in applied.stdout
        shown = json.loads((await cli("config", "show", "--json")).stdout)
        assert shown["overrides"] == {"ranker_max_anchors": 4}
        one_line_error(
            await cli("config", "set", "ranker_max_anchors=0", "--reason", "x"),
            "ranker_max_anchors: Input should be greater than or equal to 1",
        )
        one_line_error(await cli("config", "set", "oops", "--reason", "x"), "KEY=VALUE")
        one_line_error(await cli("diff", "1", "999"), "no version 999")
        one_line_error(await cli("experiments", "stop", "nope"), "no experiment 'nope'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("history", "--kind", "nope"), "unknown kind 'nope'"),
        (("rollback", "0", "--reason", "x"), "greater than or equal to 1"),
        (("principals", "add", "x"), "--role"),
    ],
)
def test_admin_cli_bad_arguments(args: tuple[str, ...], message: str) -> None:
    one_line_error(in_process("admin", *args), message)
