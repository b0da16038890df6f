"""Resumable replay bookkeeping (messaging.replay) against an in-memory transactional broker.

The fake keeps Kafka's transactional contract as far as the replay relies on it: records of a
transaction are visible only once it commits, together with the checkpoint; a new producer
(``connect``) ends the previous one's open transaction — aborted, or committed when the
commit had reached the broker before the error. Each test checks what a read-committed
reader sees: every event exactly once, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    LeaderNotAvailableError,
    ProducerFenced,
    RequestTimedOutError,
)

from core.settings import Settings, load_settings
from messaging.replay import (
    Checkpoint,
    ReplayGaveUp,
    TransactionalReplay,
    Transactions,
    replay_id,
    resume_position,
)
from schemas.events import Outcome, loads_event

N = 23


def events(n: int = N) -> list[Outcome]:
    return [
        Outcome.model_validate(
            {"user_id": f"u{i % 4}", "item_id": f"i{i}", "event_type": "click", "ts": 1.7e9 + i}
        )
        for i in range(n)
    ]


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "replay_transaction_events": 5,
        "replay_retry_attempts": 4,
        "replay_retry_deadline_s": 3600.0,
        "replay_retry_max_s": 1.0,
    }
    values.update(overrides)
    return load_settings(**values)


@dataclass
class Broker:
    """Committed records and checkpoint, plus a script of failures to inject."""

    committed: list[bytes] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    open_txn: list[bytes] | None = None
    decided: bool = False  # the open transaction's commit reached the broker
    down: int = 0  # connects still refused
    outage: int = 0  # connects refused after an injected failure (the broker went away)
    fail_sends: set[int] = field(default_factory=set)  # nth send (1-based, overall) fails
    lost_commits: set[int] = field(default_factory=set)  # nth commit fails before the broker
    ambiguous_commits: set[int] = field(default_factory=set)  # nth commit applied, then fails
    fence_at_commit: int | None = None
    sends: int = 0
    commits: int = 0
    connects: int = 0

    def settle(self) -> None:
        """What starting a new producer of the same id does to the open transaction."""
        if self.open_txn is not None and self.decided:
            self.committed += self.open_txn
        self.open_txn, self.decided = None, False

    async def connect(self) -> Transactions:
        self.connects += 1
        if self.down > 0:
            self.down -= 1
            raise KafkaConnectionError("broker away")
        self.settle()
        return FakeTransactions(self)

    def values(self) -> list[str]:
        return [str(loads_event(v)["item_id"]) for v in self.committed]


class FakeTransactions:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.closed = False

    async def checkpoint(self) -> Checkpoint | None:
        return self.broker.checkpoint

    async def begin(self) -> None:
        self.broker.open_txn = []

    async def send(self, key: bytes, value: bytes) -> None:
        b = self.broker
        b.sends += 1
        if b.sends in b.fail_sends:
            b.down = b.outage
            raise LeaderNotAvailableError("leader away")
        assert b.open_txn is not None
        b.open_txn.append(value)

    async def commit(self, checkpoint: Checkpoint) -> None:
        b = self.broker
        b.commits += 1
        if b.fence_at_commit == b.commits:
            raise ProducerFenced()
        if b.commits in b.lost_commits:
            raise RequestTimedOutError("commit lost")
        assert b.open_txn is not None
        b.checkpoint = checkpoint  # committed atomically with the records
        if b.commits in b.ambiguous_commits:
            b.decided, b.down = True, b.outage
            raise RequestTimedOutError("commit answer lost")
        b.committed += b.open_txn
        b.open_txn = None

    async def close(self) -> None:
        self.closed = True


async def no_sleep(_: float) -> None:
    return None


def replay(broker: Broker, evs: list[Outcome], **overrides: object) -> TransactionalReplay:
    return TransactionalReplay(
        settings(**overrides), evs, fingerprint="f", connect=broker.connect, sleep=no_sleep
    )


def expected(evs: list[Outcome]) -> list[str]:
    return [e.item_id for e in evs]


async def test_transactions_of_the_configured_size_commit_every_event_once() -> None:
    broker, evs = Broker(), events()
    progress: list[int] = []
    run = replay(broker, evs)
    run.on_progress = progress.append
    report = await run.run()
    assert broker.values() == expected(evs)
    assert (report.started, report.committed, report.transactions) == (0, N, 5)  # 5+5+5+5+3
    assert progress == [5, 5, 5, 5, 3]
    assert broker.checkpoint is not None and broker.checkpoint.next == N


@pytest.mark.parametrize("failing_send", [1, 7, 12, 23])
async def test_a_failed_send_resends_the_open_transaction_only(failing_send: int) -> None:
    broker, evs = Broker(fail_sends={failing_send}), events()
    report = await replay(broker, evs).run()
    assert broker.values() == expected(evs)
    assert report.retries == 1
    assert broker.sends == N + (failing_send - 1) % 5 + 1  # the aborted part, sent again


async def test_a_commit_lost_before_the_broker_is_sent_again() -> None:
    broker, evs = Broker(lost_commits={2}), events()
    await replay(broker, evs).run()
    assert broker.values() == expected(evs)
    assert broker.sends == N + 5


async def test_a_commit_whose_answer_was_lost_is_not_sent_again() -> None:
    """The broker committed transaction 2 but the producer saw an error: the checkpoint read
    by the next producer says so, and the replay goes on after it."""
    broker, evs = Broker(ambiguous_commits={2}), events()
    report = await replay(broker, evs).run()
    assert broker.values() == expected(evs)
    assert broker.sends == N
    assert report.retries == 1


async def test_broker_away_for_a_while_is_waited_for() -> None:
    broker, evs = Broker(fail_sends={8}, outage=2), events()  # 3 failed attempts, then back
    report = await replay(broker, evs).run()
    assert broker.values() == expected(evs)
    assert report.retries == 3


async def test_giving_up_names_the_first_uncommitted_event_and_a_resume_completes() -> None:
    broker, evs = Broker(fail_sends={13}, outage=10), events()
    with pytest.raises(ReplayGaveUp) as gave_up:
        await replay(broker, evs).run()
    assert gave_up.value.position == 10  # transactions 1 and 2 committed
    assert gave_up.value.attempts == 4  # replay_retry_attempts
    assert "gave up after 4 attempts" in str(gave_up.value)
    assert broker.values() == expected(evs)[:10]
    broker.down = 0
    report = await replay(broker, evs).run(gave_up.value.position, resume=True)
    assert (report.requested, report.started, report.committed) == (10, 10, N)
    assert broker.values() == expected(evs)


async def test_resume_after_a_commit_that_went_through_after_giving_up() -> None:
    """The replay gives up on an unanswered commit the broker did apply: the position it
    names is before that transaction, and the resume skips it by the checkpoint."""
    broker, evs = Broker(ambiguous_commits={3}, outage=10), events()
    with pytest.raises(ReplayGaveUp) as gave_up:
        await replay(broker, evs).run()
    assert gave_up.value.position == 10
    broker.down = 0
    report = await replay(broker, evs).run(gave_up.value.position, resume=True)
    assert (report.requested, report.started) == (10, 15)
    assert broker.values() == expected(evs)


async def test_a_fenced_producer_gives_up_at_once() -> None:
    broker, evs = Broker(fence_at_commit=2), events()
    with pytest.raises(ReplayGaveUp) as gave_up:
        await replay(broker, evs).run()
    assert (gave_up.value.position, gave_up.value.attempts) == (5, 1)
    assert "ProducerFenced" in str(gave_up.value)


async def test_a_fresh_run_ignores_an_earlier_runs_checkpoint() -> None:
    broker, evs = Broker(), events()
    await replay(broker, evs).run()
    broker.fail_sends = {N + 3}  # the second run reconnects once
    await replay(broker, evs).run()
    assert broker.values() == expected(evs) * 2  # replayed twice on purpose


async def test_the_time_bound_ends_a_transaction_early() -> None:
    broker, evs = Broker(), events(4)
    report = await replay(broker, evs, replay_transaction_events=1000).run()
    assert report.transactions == 1
    assert broker.values() == expected(evs)


async def test_start_outside_the_events_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        await replay(Broker(), events(3)).run(4)


@pytest.mark.parametrize(
    ("checkpoint", "requested", "start"),
    [
        (None, 7, 7),
        (Checkpoint("r", 0, 10), 7, 10),  # committed past the request: skip to it
        (Checkpoint("r", 0, 10), 10, 10),  # exactly there
        (Checkpoint("r", 0, 10), 12, 12),  # asked past it: the caller's choice
        (Checkpoint("r", 8, 10), 7, 7),  # that run started later: not this replay's prefix
    ],
)
def test_resume_position(checkpoint: Checkpoint | None, requested: int, start: int) -> None:
    assert resume_position(checkpoint, requested) == start


def test_checkpoint_round_trip_and_foreign_metadata() -> None:
    checkpoint = Checkpoint("abc", 3, 9)
    assert Checkpoint.decode(checkpoint.encode()) == checkpoint
    for foreign in (None, "", "not json", "[]", '{"v": 2, "run": "a", "start": 0, "next": 1}',
                    '{"v": 1, "run": "a", "start": 5, "next": 1}', '{"v": 1}'):  # fmt: skip
        assert Checkpoint.decode(foreign) is None


def test_replay_id_depends_on_input_and_topic() -> None:
    a = replay_id(load_settings(topic_prefix="p"), "f1")
    assert a == replay_id(load_settings(topic_prefix="p"), "f1")
    assert a != replay_id(load_settings(topic_prefix="p"), "f2")
    assert a != replay_id(load_settings(topic_prefix="q"), "f1")
    assert a.startswith("streamrec-replay.p.outcomes.")
