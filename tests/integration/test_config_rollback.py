"""Versioned serving config end to end (issue 19): rules and run-time ranker settings change
the answers of every server, a rollback restores the answers exactly, history / diff / audit
record who did what — real gRPC servers and Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis

from core.settings import Settings
from schemas import recommender_pb2 as pb
from schemas.admin import Snapshot
from schemas.keyspace import Keyspace
from serving.admin_store import AdminStore, NoChange
from tests.integration.serving_support import (
    ADMIN_MD,
    add_principal,
    admin,
    ctx,
    recommender,
    running,
    seed,
    serving_settings,
    wait_for,
)

#: the product's promise for a rollback (measured and reported, waited for generously)
ROLLBACK_EFFECT_S = 2.0


def answer(reply: pb.RecommendResponse) -> list[tuple[str, float]]:
    return [(i.item_id, i.score) for i in reply.items]


def same(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    """Same items in the same order, same scores (to 1e-4 relative: scores decay with the
    anchors' age, ~1e-5 relative per second)."""
    return [i for i, _ in a] == [i for i, _ in b] and all(
        x == pytest.approx(y, rel=1e-4) for (_, x), (_, y) in zip(a, b, strict=True)
    )


async def test_rollback_restores_the_answers_of_every_server(
    settings: Settings,
    redis: Redis,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    world = await seed(redis, Keyspace(settings.key_prefix))
    cfg = serving_settings(settings, tmp_path)
    async with (
        running(cfg, log_exposures=False) as (_a, ch_a),
        running(cfg, log_exposures=False) as (_b, ch_b),
    ):
        stub = admin(ch_a)
        ada = await add_principal(ch_a, "ada", "admin")
        request = pb.RecommendRequest(user_id="u1", k=5, context=ctx(world))

        async def on_b() -> list[tuple[str, float]]:
            return answer(await recommender(ch_b).Recommend(request))

        before = await on_b()
        assert [item for item, _ in before][:3] == ["b", "c", "d"]
        assert "a2" not in {item for item, _ in before}  # seen by u1

        rule = await stub.CreateRule(
            pb.CreateRuleRequest(
                rule=pb.Rule(kind=pb.RULE_KIND_BLOCK, item_id="b"), reason="b is out of stock"
            ),
            metadata=ada,
        )
        changed = await stub.SetConfig(
            pb.SetConfigRequest(
                values_json={"ranker_exclude_seen": "false"}, reason="repeat buyers"
            ),
            metadata=ada,
        )
        assert (changed.version, changed.action, changed.author) == (3, "set_config", "ada")
        assert [(c.path, c.old_json, c.new_json) for c in changed.diff] == [
            ("config.ranker_exclude_seen", "", "false")
        ]

        async def changed_on_b() -> list[tuple[str, float]] | None:
            now = await on_b()
            items = {item for item, _ in now}
            return now if "b" not in items and "a2" in items else None

        assert await wait_for(changed_on_b), "the change never reached the second server"

        history = await stub.ListVersions(pb.ListVersionsRequest(), metadata=ADMIN_MD)
        assert history.current == 3
        assert [(v.version, v.action, v.author) for v in history.versions] == [
            (3, "set_config", "ada"),
            (2, "create_rule", "ada"),
            (1, "baseline", "system"),
        ]
        assert history.versions[1].reason == "b is out of stock"
        assert [(c.path, c.old_json) for c in history.versions[1].diff] == [
            (f"rules.{rule.id}", "")
        ]
        only_rules = await stub.ListVersions(
            pb.ListVersionsRequest(kind="rules"), metadata=ADMIN_MD
        )
        assert [v.version for v in only_rules.versions] == [2]
        diff = await stub.DiffVersions(
            pb.DiffVersionsRequest(from_version=1, to_version=3), metadata=ADMIN_MD
        )
        assert [c.path for c in diff.changes] == [
            "config.ranker_exclude_seen",
            f"rules.{rule.id}",
        ]

        started = time.monotonic()
        rolled = await stub.Rollback(
            pb.RollbackRequest(version=1, reason="revert the out-of-stock test"), metadata=ada
        )
        assert (rolled.version, rolled.action, rolled.target, rolled.author) == (
            4,
            "rollback",
            "v1",
            "ada",
        )
        assert sorted(rolled.kinds) == ["config", "rules"]

        async def restored_on_b() -> bool:
            return same(await on_b(), before)

        assert await wait_for(restored_on_b), "the rollback never reached the second server"
        effect_s = time.monotonic() - started
        record_property("rollback_effect_s", round(effect_s, 3))
        print(f"rollback effect on the second server after {effect_s:.2f} s")

        async def restored_on_a() -> bool:
            return same(answer(await recommender(ch_a).Recommend(request)), before)

        assert await wait_for(restored_on_a)

        audit = await stub.GetAudit(pb.GetAuditRequest(limit=3), metadata=ADMIN_MD)
        assert [(e.action, e.who, e.version) for e in audit.entries] == [
            ("rollback", "ada", 4),
            ("set_config", "ada", 3),
            ("create_rule", "ada", 2),
        ]
        assert audit.entries[0].reason == "revert the out-of-stock test"
        assert json.loads(audit.entries[2].detail)["item_id"] == "b"

        # roll forward one kind only: the rule comes back, the settings stay rolled back
        await stub.Rollback(
            pb.RollbackRequest(version=3, reason="rule again", kind="rules"), metadata=ada
        )
        config = await stub.GetConfig(pb.GetConfigRequest(), metadata=ADMIN_MD)
        assert json.loads(config.overrides_json) == {}
        assert config.version == 5
        assert "ranker_exclude_seen" in config.runtime_settings

        async def rule_back() -> bool:
            items = {item for item, _ in await on_b()}
            return "b" not in items and "a2" not in items

        assert await wait_for(rule_back)


async def test_config_changes_refuse_bad_input(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    async with running(serving_settings(settings, tmp_path), log_exposures=False) as (_s, ch):
        stub = admin(ch)
        viewer = await add_principal(ch, "vera", "viewer")
        cases: list[tuple[object, grpc.StatusCode, str]] = [
            (
                stub.SetConfig(
                    pb.SetConfigRequest(values_json={"ranker_max_anchors": "0"}, reason="x"),
                    metadata=ADMIN_MD,
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "ranker_max_anchors: Input should be greater than or equal to 1",
            ),
            (
                stub.SetConfig(
                    pb.SetConfigRequest(values_json={"covis_window": "9"}, reason="x"),
                    metadata=ADMIN_MD,
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "not changeable at run time: covis_window",
            ),
            (
                stub.SetConfig(
                    pb.SetConfigRequest(values_json={"nope": "1"}, reason="x"), metadata=ADMIN_MD
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "unknown setting(s) nope",
            ),
            (
                stub.SetConfig(
                    pb.SetConfigRequest(values_json={"ranker_max_anchors": "{"}, reason="x"),
                    metadata=ADMIN_MD,
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "value is not JSON",
            ),
            (
                stub.SetConfig(
                    pb.SetConfigRequest(values_json={"ranker_max_anchors": "3"}), metadata=ADMIN_MD
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "reason is required",
            ),
            (
                stub.SetConfig(
                    pb.SetConfigRequest(values_json={"ranker_max_anchors": "3"}, reason="x"),
                    metadata=viewer,
                ),
                grpc.StatusCode.PERMISSION_DENIED,
                "needs admin",
            ),
            (
                stub.Rollback(pb.RollbackRequest(version=7, reason="x"), metadata=ADMIN_MD),
                grpc.StatusCode.NOT_FOUND,
                "no version 7",
            ),
            (
                stub.Rollback(pb.RollbackRequest(version=0, reason="x"), metadata=ADMIN_MD),
                grpc.StatusCode.INVALID_ARGUMENT,
                "version must be",
            ),
            (
                stub.Rollback(pb.RollbackRequest(version=1), metadata=ADMIN_MD),
                grpc.StatusCode.INVALID_ARGUMENT,
                "reason is required",
            ),
            (
                stub.ListVersions(pb.ListVersionsRequest(kind="nope"), metadata=ADMIN_MD),
                grpc.StatusCode.INVALID_ARGUMENT,
                "unknown kind 'nope'",
            ),
            (
                stub.DiffVersions(
                    pb.DiffVersionsRequest(from_version=1, to_version=2), metadata=ADMIN_MD
                ),
                grpc.StatusCode.NOT_FOUND,
                "no version 1",
            ),
        ]
        for call, code, message in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call  # type: ignore[misc]
            assert info.value.code() == code, info.value.details()
            assert message in (info.value.details() or ""), info.value.details()
        set_once = await stub.SetConfig(
            pb.SetConfigRequest(values_json={"ranker_max_anchors": "3"}, reason="x"),
            metadata=ADMIN_MD,
        )
        assert set_once.version == 2
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SetConfig(
                pb.SetConfigRequest(values_json={"ranker_max_anchors": "3"}, reason="again"),
                metadata=ADMIN_MD,
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "nothing to change" in (info.value.details() or "")

        async def applied() -> bool:
            got = await stub.GetConfig(pb.GetConfigRequest(), metadata=viewer)
            return bool(json.loads(got.effective_json)["max_anchors"] == 3)

        assert await wait_for(applied)


async def test_pause_gives_everyone_control_on_every_server(
    settings: Settings,
    redis: Redis,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    world = await seed(redis, Keyspace(settings.key_prefix))
    cfg = serving_settings(settings, tmp_path)
    experiment = {
        "name": "pause-me",
        "variants": [
            {"name": "control", "share": 0.5},
            {"name": "beta", "share": 0.5, "params": {"popularity_exponent": 1.0}},
        ],
    }
    async with (
        running(cfg, log_exposures=False) as (_a, ch_a),
        running(cfg, log_exposures=False) as (_b, ch_b),
    ):
        stub = admin(ch_a)
        otto = await add_principal(ch_a, "otto", "operator")

        async def variants_on_b() -> set[str]:
            seen = set()
            for i in range(30):
                reply = await recommender(ch_b).Recommend(
                    pb.RecommendRequest(user_id=f"user-{i}", k=2, context=ctx(world))
                )
                seen.add(reply.variant)
            return seen

        await stub.CreateExperiment(
            pb.CreateExperimentRequest(config_json=json.dumps(experiment)), metadata=ADMIN_MD
        )

        async def both() -> bool:
            return await variants_on_b() == {"control", "beta"}

        assert not await both()  # a draft serves nothing
        await stub.StartExperiment(pb.ChangeExperimentRequest(name="pause-me"), metadata=ADMIN_MD)
        assert await wait_for(both)
        started = time.monotonic()
        paused = await stub.PauseExperiment(
            pb.ChangeExperimentRequest(name="pause-me", reason="guardrail"), metadata=otto
        )
        assert (paused.status, paused.control) == ("paused", "control")

        async def control_only() -> bool:
            return await variants_on_b() == {"control"}

        assert await wait_for(control_only)
        effect_s = time.monotonic() - started
        record_property("pause_effect_s", round(effect_s, 3))
        print(f"pause effect on the second server after {effect_s:.2f} s")
        listed = await stub.ListExperiments(pb.ListExperimentsRequest(), metadata=otto)
        assert [(e.name, e.status) for e in listed.experiments] == [("pause-me", "paused")]
        for call, code in (
            (stub.PauseExperiment(pb.ChangeExperimentRequest(name="pause-me"), metadata=otto),
             grpc.StatusCode.FAILED_PRECONDITION),
            (stub.PauseExperiment(pb.ChangeExperimentRequest(name="nope"), metadata=otto),
             grpc.StatusCode.NOT_FOUND),
            (stub.PauseExperiment(pb.ChangeExperimentRequest(), metadata=otto),
             grpc.StatusCode.INVALID_ARGUMENT),
            (stub.CreateExperiment(pb.CreateExperimentRequest(config_json="{"), metadata=ADMIN_MD),
             grpc.StatusCode.INVALID_ARGUMENT),
            (stub.PromoteExperiment(
                pb.PromoteExperimentRequest(name="pause-me", force=True), metadata=ADMIN_MD),
             grpc.StatusCode.INVALID_ARGUMENT),
            (stub.PromoteExperiment(
                pb.PromoteExperimentRequest(name="pause-me", decision="ship", winner="beta",
                                            users_per_arm={"control": 5, "beta": 50}),
                metadata=ADMIN_MD),
             grpc.StatusCode.FAILED_PRECONDITION),
        ):  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == code, info.value.details()
        forced = await stub.PromoteExperiment(
            pb.PromoteExperimentRequest(
                name="pause-me", variant="beta", force=True, reason="PM decision"
            ),
            metadata=ADMIN_MD,
        )
        assert (forced.status, forced.promoted_variant) == ("promoted", "beta")
        assert forced.decision.startswith("forced: PM decision")
        audit = await stub.GetAudit(pb.GetAuditRequest(limit=1), metadata=ADMIN_MD)
        assert json.loads(audit.entries[0].detail)["forced"] is True

        async def beta_only() -> bool:
            return await variants_on_b() == {"beta"}

        assert await wait_for(beta_only)


async def test_concurrent_changes_are_all_versioned(settings: Settings, redis: Redis) -> None:
    """Ten servers adding a rule at once: ten rules, versions 2..11, nothing lost (WATCH)."""
    keys = Keyspace(settings.key_prefix)
    stores = [AdminStore(redis, keys) for _ in range(10)]  # one per "server": no shared lock
    store = stores[0]

    def adding(n: int) -> Callable[[Snapshot], Snapshot]:
        def change(current: Snapshot) -> Snapshot:
            rule = {"id": f"r-{n}", "kind": "block", "item_id": f"i{n}"}
            return current.model_copy(update={"rules": {**current.rules, f"r-{n}": rule}})

        return change

    made = await asyncio.gather(
        *(
            stores[n].commit(
                author=f"admin-{n}", reason="", action="create_rule", target=f"r-{n}",
                change=adding(n),
            )
            for n in range(10)
        )
    )  # fmt: skip
    assert sorted(v.version for v in made) == list(range(2, 12))
    current, versions = await store.versions(100, None)
    assert current == 11 and len(versions) == 11
    assert len(versions[0].state.rules) == 10
    assert len(await store.list_rules()) == 10
    with pytest.raises(NoChange):
        await store.commit(
            author="x", reason="", action="set_config", target="", change=lambda s: s
        )


async def test_only_the_newest_versions_are_kept(settings: Settings, redis: Redis) -> None:
    store = AdminStore(redis, Keyspace(settings.key_prefix), versions_kept=3)

    def anchors(n: int) -> Callable[[Snapshot], Snapshot]:
        return lambda s: s.model_copy(update={"config": {"ranker_max_anchors": n}})

    for n in range(6):
        await store.commit(
            author="a", reason="", action="set_config", target="", change=anchors(n + 1)
        )
    current, versions = await store.versions(100, None)
    assert current == 7
    assert [v.version for v in versions] == [7, 6, 5]
    assert await store.version(4) is None
