"""The evaluator's reader: a user's pending events overlaid exactly, one read per prediction.

The overlay must return what Redis holds once the processor applied the pending events, so
each case reads through the overlay, then really applies the events through the worker's
processor and reads again without it: both answers must be equal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from core.settings import Settings
from evaluation.replay_reader import SCOPE, PendingEvent, PredictionScope, ReplayStateReader
from schemas.events import DeadLetter, Outcome
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from serving.state_reader import UserState
from streams.pipeline import BatchProcessor, RawMessage
from streams.processor import BatchPlanner, ProcessorConfig
from streams.state_store import StateStore
from tests.support import delete_prefix_keys
from tests.worker_support import outcome

SEEN_MAX = 4
RECENT_MAX = 5
BASE_TS = time.time() - 86_400


class _Learner:
    """The worker's processor over the test's key prefix, fed (item, ts, type) events."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.config = ProcessorConfig.from_settings(settings)
        self.offset = 0
        self.processor = BatchProcessor(
            store,
            BatchPlanner(store.keys, self.config),
            self._reject,
            max_event_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
        )

    async def _reject(self, letters: Sequence[tuple[bytes | None, DeadLetter]]) -> None:
        raise AssertionError(f"rejected: {letters}")

    async def learn(self, user: str, events: Sequence[tuple[str, float, str]]) -> None:
        messages = []
        for item, ts, kind in events:
            self.offset += 1
            messages.append(
                RawMessage(
                    Topic.OUTCOMES,
                    "outcomes",
                    0,
                    self.offset,
                    user.encode(),
                    outcome(user, item, ts, kind),
                )
            )
        await self.processor.process(messages, now=time.time())

    def pending(self, events: Sequence[tuple[str, float, str]]) -> tuple[PendingEvent, ...]:
        """As the evaluator builds them: from the decoded event (its ts is a datetime)."""
        out = []
        for item, ts, kind in events:
            event = Outcome.model_validate_json(outcome("u", item, ts, kind))
            out.append(
                PendingEvent(event.ts.timestamp(), item, self.config.weight(event.event_type) > 0)
            )
        return tuple(out)


@pytest.fixture
async def replay(settings: Settings) -> AsyncIterator[tuple[_Learner, ReplayStateReader]]:
    small = settings.model_copy(update={"user_seen_max": SEEN_MAX, "user_recent_max": RECENT_MAX})
    store = await StateStore.connect(small.redis_url, Keyspace(small.key_prefix), timeout_s=5.0)
    reader = await ReplayStateReader.connect(small)
    assert isinstance(reader, ReplayStateReader)
    reader.seen_max = SEEN_MAX
    try:
        yield _Learner(small, store), reader
    finally:
        await reader.aclose()
        await store.aclose()
        await delete_prefix_keys(small.redis_url, small.key_prefix)


async def _read(reader: ReplayStateReader, user: str, max_recent: int) -> UserState:
    return await reader.read_user(
        user_id=user,
        session_id=None,
        max_recent=max_recent,
        with_seen=True,
        segment=None,
        top_n=10,
        deadline=None,
    )


_Events = list[tuple[str, float, str]]
CASES: dict[str, tuple[_Events, _Events]] = {
    # stored history, then pending events: (item, seconds after BASE_TS, event type)
    "fits": ([("a", 0, "view"), ("b", 10, "view")], [("c", 20, "view")]),
    "seen overflows and recent is trimmed": (
        [("a", 0, "view"), ("b", 10, "click"), ("c", 20, "view")],
        [("d", 30, "view"), ("e", 40, "purchase"), ("f", 50, "view")],
    ),
    "repeat of a stored item moves it up": (
        [("a", 0, "view"), ("b", 10, "view"), ("c", 20, "view"), ("d", 30, "view")],
        [("a", 40, "view"), ("e", 50, "view")],
    ),
    "zero-weight event: seen only": (
        [("a", 0, "view"), ("b", 10, "view")],
        [("c", 20, "dismiss"), ("d", 30, "view")],
    ),
    "equal timestamps at the trim edge": (
        [("b", 0, "view"), ("a", 0, "view"), ("c", 0, "view"), ("d", 0, "view")],
        [("e", 0, "view"), ("0", 0, "view")],
    ),
    "nothing stored yet": ([], [("a", 5, "view"), ("b", 6.0004, "view")]),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("max_recent", [2, RECENT_MAX])
async def test_overlay_equals_the_applied_state(
    replay: tuple[_Learner, ReplayStateReader], case: str, max_recent: int
) -> None:
    learner, reader = replay
    user = f"u-{list(CASES).index(case)}-{max_recent}"
    stored, pending = (
        [(item, BASE_TS + dt, kind) for item, dt, kind in events] for events in CASES[case]
    )
    if stored:
        await learner.learn(user, stored)
    token = SCOPE.set(PredictionScope(learner.pending(pending)))
    try:
        overlaid = await _read(reader, user, max_recent)
    finally:
        SCOPE.reset(token)
    await learner.learn(user, pending)
    applied = await _read(reader, user, max_recent)
    assert overlaid == applied
    assert len(applied.seen) == min(SEEN_MAX, len({item for item, _, _ in stored + pending}))


async def test_one_read_per_prediction(replay: tuple[_Learner, ReplayStateReader]) -> None:
    learner, reader = replay
    await learner.learn("u-shared", [("a", BASE_TS, "view")])
    before = reader.round_trips
    token = SCOPE.set(PredictionScope(learner.pending([("b", BASE_TS + 1, "view")])))
    try:
        first, second = await asyncio.gather(
            _read(reader, "u-shared", 3), _read(reader, "u-shared", 3)
        )
    finally:
        SCOPE.reset(token)
    assert first is second
    assert [item for _, item in first.recent] == ["b", "a"]
    assert reader.round_trips == before + 1
