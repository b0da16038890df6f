"""Prequential (test-then-learn) replay of an interaction log through the real worker and server.

Every event is learned by :class:`streams.pipeline.BatchProcessor` — the worker's own path
(decode → plan → one atomic Lua apply in Redis) — and every prediction is asked of
:class:`serving.recommender.Recommender` — the server's own path (Redis reads, caches, the
pure ranker). The state lives under a throwaway Redis key prefix that is deleted afterwards,
whatever happens. A :class:`~evaluation.baselines.PopularityBaseline` is asked the same
questions against the same state.

Protocols (see docs/evaluation.md):

* ``prequential`` (one log, no ``--test``): events in time order; an event is a *target*
  when its user is known (has an earlier event) and has not interacted with the item before,
  and its event type has a positive weight. Each target is scored first, then learned.
* ``streaming`` (``--test``, or ``--holdout-days``: the end of the log cut off as the test
  log, see :mod:`evaluation.holdout`): learn the training log, then replay the test log the
  same way, learning each test event after it was scored.
* ``batch`` (``--test`` or ``--holdout-days``): learn the training log, then score the test
  log without learning it; only each user's (session's) own history moves (recent list and
  seen set, written with the processor's own encoding), so a prediction still sees its prefix.

With ``--format sessions --test`` the targets follow the session-based next-item protocol of
the literature instead: every test event but the first of its session, whether or not the
item already occurred in the session (so seen items are not filtered: the ranker runs with
``exclude_seen=False`` and ``self_neighbours=True``, repeat clicks being a large share of the
targets).

Speed. The training log is learned in large batches (exact: the planner handles a batch in
order). Batch-protocol sessions are scored concurrently (exact: nothing is learned). In the
test-then-learn protocols the log is cut into micro-batches of ``pipeline`` consecutive
events: every target of a micro-batch is scored (concurrently) against the state as it was
before the micro-batch, then the micro-batch is learned in one processor batch — the lag of a
worker applying micro-batches. A prediction's *own* user history is always exact: the user's
earlier events of the same micro-batch are overlaid on what Redis holds, exactly as the
processor will write them (:data:`evaluation.replay_reader.SCOPE`). What may be up to
``pipeline - 1`` events late is the rest of the model (co-visitation, popularity).
``pipeline=1`` is exact in every respect.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from core.errors import ConfigError, UnavailableError
from core.settings import Settings
from evaluation.baselines import PopularityBaseline
from evaluation.datasets import Dataset, DatasetFormat, ReadOptions, load_dataset
from evaluation.holdout import Holdout, split_holdout
from evaluation.intervals import Interval
from evaluation.metrics import Accumulator, Scores
from evaluation.predictions import METRICS, PredictionRow, PredictionTable
from evaluation.protocol import LEVEL, RESAMPLES, PrequentialSpec, Progress, Protocol
from evaluation.replay_reader import (
    SCOPE,
    PendingEvent,
    PredictionScope,
    ReplaySessionReads,
    ReplayStateReader,
)
from schemas.events import Context, DeadLetter, Outcome
from schemas.keyspace import Keyspace, format_recent
from schemas.topics import Topic
from serving.config import RankerConfig
from serving.recommender import Recommender
from serving.shared_state import SharedState
from streams.pipeline import BatchProcessor, RawMessage
from streams.processor import BatchPlanner, ProcessorConfig
from streams.state_store import StateStore

__all__ = [
    "PrequentialResult",
    "PrequentialSpec",
    "Progress",
    "Protocol",
    "run_prequential",
]

#: Settings reported with every result (processor and ranker knobs that shape the figures).
_REPORTED_SETTINGS = (
    "covis_window",
    "covis_session_gap_s",
    "covis_distance_decay",
    "covis_backward_weight",
    "covis_self_weight",
    "covis_half_life_s",
    "covis_top_k",
    "popularity_half_life_s",
    "event_weights",
)
_SESSION_OVERRIDES: dict[str, bool] = {"exclude_seen": False, "self_neighbours": True}


@dataclass(frozen=True, slots=True)
class PrequentialResult:
    """Scores of streamrec and the popularity baseline, and how they were obtained.

    ``table`` holds the per-prediction results, ``intervals`` each model's bootstrap
    intervals (None without predictions) and ``interval_info`` how they were drawn;
    ``predictions_file`` is what :func:`evaluation.predictions.write_predictions` returned
    when the table was written to a file.
    """

    streamrec: Scores
    popularity: Scores
    k: int
    settings: dict[str, Any]
    table: PredictionTable | None = None
    intervals: dict[str, dict[str, Interval] | None] = field(default_factory=dict)
    interval_info: dict[str, Any] | None = None
    predictions_file: dict[str, Any] | None = None

    def _model(self, name: str, scores: Scores) -> dict[str, Any]:
        """The model's scores, each metric followed by its interval (``hr``, ``hr_ci`` …)."""
        found = self.intervals.get(name)
        out: dict[str, Any] = {}
        for key, value in scores.to_dict().items():
            out[key] = value
            if any(key == metric for metric, _ in METRICS):
                out[f"{key}_ci"] = None if found is None else found[key].to_list()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "streamrec": self._model("streamrec", self.streamrec),
            "popularity": self._model("popularity", self.popularity),
            "k": self.k,
            "intervals": self.interval_info,
            "predictions": self.predictions_file,
            "settings": self.settings,
        }


def _wire(event: Outcome) -> bytes:
    """The ``outcome.v1`` wire form of an event, as a producer would send it."""
    data: dict[str, Any] = {
        "user_id": event.user_id,
        "item_id": event.item_id,
        "event_type": event.event_type.value,
        "ts": event.ts.isoformat(),
    }
    if event.session_id is not None:
        data["session_id"] = event.session_id
    if event.request_id is not None:
        data["request_id"] = event.request_id
    if event.value is not None:
        data["value"] = event.value
    if event.context is not None:
        data["context"] = event.context.model_dump(mode="json")
    return orjson.dumps(data)


def _last_distinct(recent: deque[str], n: int) -> list[str]:
    """The ``n`` newest distinct items of ``recent`` (oldest first).

    A superset of the items the processor pairs a new event with (its window: the last W
    distinct items, cut further by the session gap), so invalidating these and the event's own
    item drops every neighbour list the event can change.
    """
    out: list[str] = []
    for item in reversed(recent):
        if item not in out:
            out.append(item)
            if len(out) == n:
                break
    return out


def _eval_prefix(base: str) -> str:
    return f"{base[:40]}.eval-{uuid.uuid4().hex[:12]}"


@dataclass(slots=True)
class _Tally:
    streamrec: Accumulator
    popularity: Accumulator
    known: set[str] = field(default_factory=set)
    interacted: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: each user's recent positive-weight items (newest last), as the processor's history
    history: dict[str, deque[str]] = field(default_factory=dict)
    #: one row per prediction (streamrec's rank, then the baseline's)
    rows: list[PredictionRow] = field(default_factory=list)


class _Replay:
    """One replay: the worker's processor, the server's recommender, a baseline, a prefix."""

    def __init__(
        self,
        settings: Settings,
        spec: PrequentialSpec,
        ranker: RankerConfig,
        store: StateStore,
        reader: ReplayStateReader,
        progress: Progress | None,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.keys = store.keys
        self.processor_config = ProcessorConfig.from_settings(settings)
        self.processor = BatchProcessor(
            store,
            BatchPlanner(store.keys, self.processor_config),
            self._dead_letters,
            max_event_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
        )
        self.store = store
        self.reader = reader
        self.ranker = ranker
        self.shared = SharedState(
            reader,
            base_config=ranker,
            algo_version=settings.algo_version,
            top_n=settings.serving_popularity_top_n,
            network_timeout_s=settings.network_timeout_s,
            last_known_file=None,
        )
        self.sessions = ReplaySessionReads(reader)
        self.recommender = Recommender(
            reader,
            self.shared,
            request_timeout_s=max(settings.network_timeout_s, 5.0),
            sessions=self.sessions,
        )
        self.baseline = PopularityBaseline(reader, self.shared)
        self.tally = _Tally(Accumulator(spec.k), Accumulator(spec.k))
        self.progress = progress
        self.topic_name = settings.topic(Topic.OUTCOMES.value)
        self.offset = 0
        self.learned = 0
        self.refreshed_at = 0
        self.scored_events = 0
        self.done = 0
        self.total = 0
        self.rejected: list[DeadLetter] = []
        #: user → predicted (``spec.sample``), decided once per user
        self.sampled: dict[str, bool] = {}

    async def _dead_letters(self, letters: Sequence[tuple[bytes | None, DeadLetter]]) -> None:
        self.rejected.extend(envelope for _, envelope in letters)

    def _tick(self, phase: str, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(phase, self.done, self.total)

    # --- learning -----------------------------------------------------------------------------
    async def learn(self, events: Sequence[Outcome]) -> None:
        """Apply ``events`` (in order) through the worker's batch processor.

        Then note them (known users, interacted items) and drop the cached neighbour lists
        they may have changed: each event's item and its user's recent items.
        """
        if not events:
            return
        messages = []
        for event in events:
            self.offset += 1
            messages.append(
                RawMessage(
                    Topic.OUTCOMES,
                    self.topic_name,
                    0,
                    self.offset,
                    event.user_id.encode(),
                    _wire(event),
                )
            )
        result = await self.processor.process(messages, now=time.time())
        self.learned += sum(result.applied.values())
        if self.rejected:
            first = self.rejected[0]
            raise ConfigError(
                f"the worker rejected {len(self.rejected)} event(s) of the log "
                f"({first.reason}: {first.error})"
            )
        touched: set[str] = set()
        # the window's W distinct items are other than the event's item: W + 1 covers them
        window, weight = self.processor_config.window + 1, self.processor_config.weight
        for event in events:
            recent = self.history(event.user_id)
            touched.add(event.item_id)
            touched.update(_last_distinct(recent, window))
            if weight(event.event_type) > 0:  # only these enter the processor's history
                recent.append(event.item_id)
            self.note(event)
        self.reader.invalidate(touched)
        self.sessions.invalidate({e.item_id for e in events}, {e.user_id for e in events})

    def history(self, user: str) -> deque[str]:
        recent = self.tally.history.get(user)
        if recent is None:
            recent = self.tally.history[user] = deque(maxlen=self.processor_config.recent_max)
        return recent

    async def learn_all(self, events: Sequence[Outcome], phase: str) -> None:
        for start in range(0, len(events), self.spec.learn_batch):
            chunk = events[start : start + self.spec.learn_batch]
            await self.learn(chunk)
            self._tick(phase, len(chunk))
        await self.refresh()

    async def refresh(self, *, force: bool = True) -> None:
        """Refresh the server's shared caches (popularity …), at most every ``refresh_every``
        learned events unless forced."""
        if not force and self.learned - self.refreshed_at < self.spec.refresh_every:
            return
        if not await self.shared.refresh():
            raise UnavailableError("Redis did not answer the evaluation's cache refresh")
        self.refreshed_at = self.learned

    async def remember(self, event: Outcome) -> None:
        """Batch protocol: move only the user's own history (recent list, seen set)."""
        cfg, keys = self.processor_config, self.keys
        ts = event.ts.timestamp()
        recent, seen = keys.user_recent(event.user_id), keys.user_seen(event.user_id)
        pipe = self.store.client.pipeline(transaction=False)
        if cfg.weight(event.event_type) > 0:
            pipe.lpush(recent, format_recent(ts, event.item_id))
            pipe.ltrim(recent, 0, cfg.recent_max - 1)
        if self.ranker.exclude_seen:  # nobody reads the seen set otherwise
            pipe.zadd(seen, {event.item_id: ts})
            pipe.zremrangebyrank(seen, 0, -(cfg.seen_max + 1))
        if len(pipe):
            async with asyncio.timeout(self.settings.network_timeout_s):
                await pipe.execute()
        self.sessions.invalidate((), (event.user_id,))

    # --- scoring ------------------------------------------------------------------------------
    def in_sample(self, user: str) -> bool:
        found = self.sampled.get(user)
        if found is None:
            found = self.sampled[user] = self.spec.in_sample(user)
        return found

    def is_target(self, event: Outcome, first_of_session: bool) -> bool:
        if self.spec.sample is not None and not self.in_sample(event.user_id):
            return False
        if self.spec.session_protocol:
            return not first_of_session
        tally = self.tally
        return (
            event.user_id in tally.known
            and event.item_id not in tally.interacted[event.user_id]
            and self.processor_config.weight(event.event_type) > 0
        )

    def note(self, event: Outcome) -> None:
        self.tally.known.add(event.user_id)
        self.tally.interacted[event.user_id].add(event.item_id)

    async def score(
        self, position: int, event: Outcome, pending: tuple[PendingEvent, ...] = ()
    ) -> None:
        """Ask both recommenders for ``event``, the log's ``position``-th (0-based) event;
        ``pending``: the user's unlearned events."""
        context = event.context or Context()
        now = event.ts.timestamp()
        token = SCOPE.set(PredictionScope(pending))  # gather's tasks copy the context
        try:
            answer, baseline = await asyncio.gather(
                self.recommender.recommend(
                    user_id=event.user_id, session_id=None, k=self.spec.k, context=context, now=now
                ),
                self.baseline.recommend(
                    user_id=event.user_id, session_id=None, k=self.spec.k, context=context, now=now
                ),
            )
        finally:
            SCOPE.reset(token)
        if answer.degraded:
            raise UnavailableError(
                "Redis did not answer a recommendation in time during the evaluation"
            )
        ranks = (
            self.tally.streamrec.add([item.item_id for item in answer.items], event.item_id),
            self.tally.popularity.add(baseline, event.item_id),
        )
        self.tally.rows.append((position, event.user_id, event.item_id, ranks))
        self.scored_events += 1

    async def _bounded(self, jobs: Iterable[Awaitable[None]]) -> None:
        """Run awaitables with at most ``concurrency`` in flight; the first error wins."""
        limit = asyncio.Semaphore(self.spec.concurrency)

        async def one(job: Awaitable[None]) -> None:
            async with limit:
                await job

        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(one(job))

    # --- protocols ----------------------------------------------------------------------------
    async def test_then_learn(self, events: Sequence[Outcome], phase: str) -> None:
        """Score each target, then learn it, by micro-batches (see the module doc)."""
        first_seen: set[str] = set()
        weight = self.processor_config.weight
        for start in range(0, len(events), self.spec.pipeline):
            chunk = events[start : start + self.spec.pipeline]
            pending: dict[str, list[PendingEvent]] = {}
            targets: list[tuple[int, Outcome, tuple[PendingEvent, ...]]] = []
            for position, event in enumerate(chunk, start):
                first = event.user_id not in first_seen
                first_seen.add(event.user_id)
                own = pending.setdefault(event.user_id, [])
                if self.is_target(event, first):
                    targets.append((position, event, tuple(own)))
                self.note(event)  # the user's next event of the chunk sees this one
                own.append(
                    PendingEvent(event.ts.timestamp(), event.item_id, weight(event.event_type) > 0)
                )
            if len(targets) == 1:
                await self.score(*targets[0])
            elif targets:
                await self._bounded(self.score(*target) for target in targets)
            await self.learn(chunk)
            await self.refresh(force=False)
            self._tick(phase, len(chunk))

    async def batch(self, events: Sequence[Outcome], phase: str) -> None:
        """Score the test log against the trained state; only user histories move."""
        by_user: dict[str, list[tuple[int, Outcome]]] = {}
        for position, event in enumerate(events):
            by_user.setdefault(event.user_id, []).append((position, event))

        async def user_run(history: list[tuple[int, Outcome]]) -> None:
            for nth, (position, event) in enumerate(history):
                if self.is_target(event, nth == 0):
                    await self.score(position, event)
                self.note(event)
                await self.remember(event)
            self._tick(phase, len(history))

        await self._bounded(user_run(history) for history in by_user.values())


async def _connect(settings: Settings) -> tuple[StateStore, ReplayStateReader]:
    keys = Keyspace(settings.key_prefix)
    store = await StateStore.connect(settings.redis_url, keys, timeout_s=settings.network_timeout_s)
    try:
        reader = await ReplayStateReader.connect(settings, attempts=3)
    except BaseException:
        await store.aclose()
        raise
    assert isinstance(reader, ReplayStateReader)
    reader.seen_max = settings.user_seen_max
    if not reader.available:
        await reader.aclose()
        await store.aclose()
        raise UnavailableError(f"Redis at {settings.redis_url} did not answer")
    return store, reader


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """Keep what is alive now (the loaded logs: ~10⁵ events) out of the cyclic GC's sight.

    A replay allocates rows, answers and tasks by the million next to the loaded events, and
    each of its ~90 full collections (200-user MovieLens-style log) rescanned them all.
    Freezing them saved from a few per cent to a fifth of the replay's CPU, depending on the
    run (docs/evaluation.md). Frozen objects are still freed by reference counting. The heap
    is unfrozen on exit; a heap someone else froze is left as it is.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _ranker_config(settings: Settings, session_protocol: bool) -> RankerConfig:
    config = RankerConfig.from_settings(settings)
    if session_protocol:
        try:
            config = config.with_overrides(_SESSION_OVERRIDES)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    return config


async def run_prequential(
    settings: Settings, spec: PrequentialSpec, *, progress: Progress | None = None
) -> PrequentialResult:
    """Replay ``spec`` against Redis at ``settings.redis_url`` under a throwaway prefix."""
    protocol = spec.resolved_protocol()
    started = time.perf_counter()
    options = ReadOptions()
    train = load_dataset(spec.path, spec.fmt, options)
    test = load_dataset(spec.test, spec.fmt, options) if spec.test is not None else None
    holdout: Holdout | None = None
    if spec.holdout_days is not None:
        holdout = split_holdout(
            train.events, spec.holdout_days, whole_sessions=spec.fmt == DatasetFormat.SESSIONS
        )
        train, test = Dataset(holdout.train, train.bad), Dataset(holdout.test)
    if not train.events and (test is None or not test.events):
        raise ConfigError(f"{spec.path}: no usable event in the log")
    catalog = {e.item_id for e in train.events}
    if test is not None:
        catalog.update(e.item_id for e in test.events)
    prefix = _eval_prefix(settings.key_prefix)
    eval_settings = settings.model_copy(update={"key_prefix": prefix})
    ranker = _ranker_config(settings, spec.session_protocol)
    with _heap_frozen():
        loaded, loaded_cpu = time.perf_counter(), time.process_time()
        store, reader = await _connect(eval_settings)
        try:
            replay = _Replay(eval_settings, spec, ranker, store, reader, progress)
            replay.total = len(train.events) + (len(test.events) if test is not None else 0)
            if test is None:
                await replay.refresh()
                await replay.test_then_learn(train.events, "replay")
            else:
                await replay.learn_all(train.events, "train")
                if protocol == Protocol.BATCH:
                    await replay.batch(test.events, "test")
                else:
                    await replay.test_then_learn(test.events, "test")
        finally:
            try:
                await store.delete_prefix()
            finally:
                await reader.aclose()
                await store.aclose()
    finished, replay_cpu_s = time.perf_counter(), time.process_time() - loaded_cpu
    replayed = replay.total
    replay_s = finished - loaded
    skipped = len(train.bad) + (len(test.bad) if test is not None else 0)
    info: dict[str, Any] = {
        "protocol": protocol.value,
        "format": spec.fmt.value,
        "path": str(spec.path),
        "test": str(spec.test) if spec.test is not None else None,
        "holdout": None
        if holdout is None
        else {
            "days": spec.holdout_days,
            "cutoff_ts": holdout.cutoff_ts,
            "train_events": len(holdout.train),
            "test_events": len(holdout.test),
            "dropped": holdout.dropped,
        },
        "targets": "session next item" if spec.session_protocol else "known user, new item",
        # a seeded fraction of the users (sessions) predicted; intervals are the sample's
        "sample": spec.sample,
        "pipeline": 1 if protocol == Protocol.BATCH else spec.pipeline,
        "refresh_every": spec.refresh_every,
        "events": replayed,
        "learned": replay.learned,
        "skipped_lines": skipped,
        "catalog": len(catalog),
        "key_prefix": prefix,
        "elapsed_s": round(finished - started, 3),
        "replay_s": round(replay_s, 3),
        "events_per_s": round(replayed / replay_s, 1) if replay_s > 0 else None,
        # CPU of this process only (Redis works in parallel): on a busy shared machine the
        # wall-clock rate understates what the replay needs
        "replay_cpu_s": round(replay_cpu_s, 3),
        "processor": {name: getattr(settings, name) for name in _REPORTED_SETTINGS},
        "ranker": ranker.model_dump(),
    }
    interval_cpu = time.process_time()
    table = PredictionTable.from_rows(("streamrec", "popularity"), replay.tally.rows)
    intervals = table.intervals(resamples=RESAMPLES, seed=spec.seed, level=LEVEL)
    interval_info = {
        "level": LEVEL,
        "method": "percentile bootstrap",
        # a session log's user is the session (evaluation.datasets)
        "unit": "session" if spec.fmt == DatasetFormat.SESSIONS else "user",
        "units": table.units,
        "resamples": RESAMPLES,
        "seed": spec.seed,
        "cpu_s": round(time.process_time() - interval_cpu, 3),
    }
    return PrequentialResult(
        streamrec=replay.tally.streamrec.scores(len(catalog)),
        popularity=replay.tally.popularity.scores(len(catalog)),
        k=spec.k,
        settings=info,
        table=table,
        intervals=intervals,
        interval_info=interval_info,
    )
