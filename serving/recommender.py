"""The recommender interface shared by the gRPC server and the offline evaluator.

``Recommender.recommend(*, user_id | session_id, k, context, …)`` reads per-request state in
at most two Redis round trips (three with the session-neighbour source on:
``RankerConfig.session_blend`` > 0 adds the anchors' session indexes to the second, sent
concurrently with the co-visitation rows, and reads the nearest neighbours' recent items in a
third; see :mod:`serving.session_neighbours`), takes everything else from the in-process caches
(:class:`~serving.shared_state.SharedState`) and ranks with the pure :func:`serving.ranker.rank`.
It never raises for Redis trouble: errors, timeouts and a passed deadline give an answer from
the caches marked ``degraded``. Exposure logging is the caller's business (the server logs,
the evaluator does not).

Exploration (:mod:`serving.exploration`): ``recommend`` gives a share of slots to items of
the new-item pool by Thompson sampling, marked ``exploring``; never on the baseline path.

Controls (:mod:`serving.controls`): a request covered by a kill switch, or whose unit is in the
holdback, is answered by :meth:`Recommender._baseline` — segment, then global popularity
(then the last-known list), the stored rules applied, the base ranker settings, no personal
state read — with stage ``kill_switch`` (kill switch) and variant ``holdback`` (holdback).

Evaluation use: build it with :meth:`Recommender.create` (or from a ``StateReader`` and a
``SharedState``), call ``await recommender.shared.refresh()`` whenever the replayed state
moved and the caches must see it, pass ``now=`` the event time, and set
``RankerConfig.exclude_seen=False`` (via settings or an experiment variant) for session data.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.errors import UnavailableError
from core.settings import Settings
from schemas.controls import BASELINE_ALGO, HOLDBACK_VARIANT
from schemas.events import Context, declared_interests
from schemas.keyspace import segment_id
from schemas.rules import Rule
from serving.config import RankerConfig
from serving.controls import Controls
from serving.experiments import Assignment
from serving.exploration import explore
from serving.ranker import (
    EMPTY_POPULARITY,
    Anchor,
    Popularity,
    RankedItem,
    Ranking,
    RankInput,
    Stage,
    anchor_weights,
    rank,
    request_filter,
)
from serving.session_neighbours import item_scores, nearest
from serving.session_reads import SessionReads
from serving.shared_state import SharedState
from serving.state_reader import Row, StateReader


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One answer. ``items`` is empty only when no item was ever known (see shared_state)."""

    request_id: str
    items: tuple[RankedItem, ...]
    stage: Stage
    variant: str
    algo_version: str
    state_age_s: float
    degraded: bool
    unit: str
    now: float
    rules: tuple[Rule, ...] = ()
    """The rules the ranking saw (for decision traces)."""
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The catalog's categories the ranking saw (for decision traces)."""


class Recommender:
    """Co-visitation recommender over the Redis state written by ``streams``."""

    def __init__(
        self,
        reader: StateReader,
        shared: SharedState,
        *,
        request_timeout_s: float = 0.25,
        sessions: SessionReads | None = None,
        controls: Controls | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.reader = reader
        #: draws of the exploration slots (serving/exploration.py); seed it in tests
        self.rng = np.random.default_rng() if rng is None else rng
        self.shared = shared
        self.request_timeout_s = request_timeout_s
        self.sessions = SessionReads(reader) if sessions is None else sessions
        self.controls = Controls() if controls is None else controls

    @classmethod
    async def create(cls, settings: Settings) -> Recommender:
        """Connect to Redis (tolerating it being down), load caches, start the refreshers."""
        reader = await StateReader.connect(settings)
        controls = Controls.from_settings(reader.redis, settings)
        try:
            shared = SharedState.from_settings(reader, settings)
            await shared.start()
            try:
                await controls.start()
            except BaseException:
                await shared.stop()
                raise
        except BaseException:
            await reader.aclose()
            raise
        return cls(reader, shared, request_timeout_s=settings.request_timeout_s, controls=controls)

    async def aclose(self) -> None:
        """Stop the refreshers and close the Redis client. Idempotent."""
        await self.controls.stop()
        await self.shared.stop()
        await self.reader.aclose()

    def _deadline(self, deadline: float | None) -> float:
        own = asyncio.get_running_loop().time() + self.request_timeout_s
        return own if deadline is None else min(own, deadline)

    async def _assign(self, unit: str, *, baseline: bool, deadline: float | None) -> Assignment:
        """The unit's arm; a baseline answer (kill switch, holdback) stores no bandit arm."""
        if baseline:
            return self.shared.plan.assign(unit)
        return await self.shared.assign(unit, deadline=self._deadline(deadline))

    def _usable(self, deadline: float) -> bool:
        return self.reader.available and asyncio.get_running_loop().time() < deadline

    async def recommend(
        self,
        *,
        user_id: str | None,
        session_id: str | None,
        k: int,
        context: Context,
        exclude: Sequence[str] = (),
        anchors: Sequence[str] = (),
        now: float | None = None,
        deadline: float | None = None,
        extra_rules: Sequence[Rule] = (),
    ) -> Recommendation:
        """Top-k for a user (or a session), anchored on their recent items and ``anchors``.

        ``deadline`` is an absolute event-loop time (``loop.time()``) for the Redis reads;
        ``extra_rules`` are applied on top of the stored ones (Admin dry runs).
        """
        unit = user_id or session_id
        if not unit:
            raise ValueError("recommend needs a user_id or a session_id")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        now = time.time() if now is None else now
        killed = self.controls.killed(context.tenant, context.surface) is not None
        holdback = self.controls.in_holdback(context.tenant, unit)
        assignment = await self._assign(unit, baseline=killed or holdback, deadline=deadline)
        if killed or holdback:
            return await self._baseline(
                k=k,
                now=now,
                context=context,
                exclude=frozenset(exclude) | frozenset(anchors),
                assignment=assignment,
                killed=killed,
                holdback=holdback,
                deadline=deadline,
                extra_rules=extra_rules,
                unit=unit,
            )
        config = assignment.config
        segment = segment_id(context.tenant, context.surface, context.locale)
        segment_pop = self.shared.segment(segment)
        limit = self._deadline(deadline)
        recent: Sequence[tuple[float, str]] = ()
        seen: frozenset[str] = frozenset()
        neighbours: dict[str, Row] = {}
        degraded = not self._usable(limit)
        if not degraded:
            try:
                state = await self.reader.read_user(
                    user_id=user_id or None,
                    session_id=None if user_id else session_id,
                    max_recent=config.max_anchors * 2,
                    with_seen=config.exclude_seen,
                    segment=segment if segment_pop is None else None,
                    top_n=self.shared.top_n,
                    deadline=limit,
                )
                recent, seen = state.recent, state.seen
                if state.segment_popularity is not None:
                    segment_pop = self.shared.remember_segment(segment, state.segment_popularity)
            except UnavailableError:
                degraded = True
        weighted = anchor_weights(recent, list(anchors), now=now, config=config)
        session_scores: dict[str, float] = {}
        if weighted and not degraded:
            try:
                if config.session_blend > 0.0:
                    neighbours, session_scores = await self._with_sessions(
                        [a.item_id for a in weighted], unit, config, limit
                    )
                else:
                    neighbours = await self.reader.read_neighbours(
                        [a.item_id for a in weighted], config.neighbours_per_anchor, deadline=limit
                    )
            except UnavailableError:
                degraded = True
        if config.exclude_seen:
            seen = seen | {item for _, item in recent}
        inp = self._input(
            k=k,
            now=now,
            context=context,
            segment_pop=segment_pop,
            anchors=weighted,
            neighbours=neighbours,
            seen=seen,
            exclude=frozenset(exclude) | frozenset(anchors),
            extra_rules=extra_rules,
            demoted=self.shared.demoted(config),
            session_scores=session_scores,
            interests=declared_interests(context),
        )
        ranking = self._explore(rank(inp, config), inp, config)
        return self._answer(ranking, assignment, degraded, unit, now, inp)

    def _explore(self, ranking: Ranking, inp: RankInput, config: RankerConfig) -> Ranking:
        """Exploration slots (never reached under a kill switch or in the holdback: those
        requests take :meth:`_baseline`)."""
        table = self.shared.exploration_table(inp.surface)
        if not table.items:
            return ranking
        return explore(
            ranking,
            table,
            k=inp.k,
            surface=inp.surface,
            allowed=request_filter(inp, respect_seen=config.exclude_seen),
            config=self.shared.exploration,
            rng=self.rng,
            now=inp.now,
        )

    async def _with_sessions(
        self, anchors: list[str], unit: str, config: RankerConfig, limit: float
    ) -> tuple[dict[str, Row], dict[str, float]]:
        """Co-visitation rows and session-neighbour scores: the rows and the anchors' session
        indexes concurrently (one round trip's wait), then the neighbours' items."""
        rows, index = await asyncio.gather(
            self.reader.read_neighbours(anchors, config.neighbours_per_anchor, deadline=limit),
            self.sessions.index(anchors, config.session_sample, deadline=limit),
            return_exceptions=True,
        )
        for outcome in (rows, index):
            if isinstance(outcome, BaseException):
                raise outcome
        assert not isinstance(rows, BaseException) and not isinstance(index, BaseException)
        close = nearest(anchors, index, exclude=unit, n=config.session_neighbours)
        if not close:
            return rows, {}
        items = await self.sessions.items(
            [v.user_id for v in close], config.session_items, deadline=limit
        )
        return rows, item_scores(close, items)

    async def similar_items(
        self,
        *,
        item_id: str,
        k: int,
        context: Context,
        exclude: Sequence[str] = (),
        now: float | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        deadline: float | None = None,
        extra_rules: Sequence[Rule] = (),
    ) -> Recommendation:
        """Items co-visited with ``item_id`` (item pages): one Redis round trip.

        The experiment unit is the viewer (user, else session) when given, else the item.
        """
        if not item_id:
            raise ValueError("similar_items needs an item_id")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        now = time.time() if now is None else now
        unit = user_id or session_id or f"item:{item_id}"
        killed = self.controls.killed(context.tenant, context.surface) is not None
        holdback = bool(user_id or session_id) and self.controls.in_holdback(context.tenant, unit)
        assignment = await self._assign(unit, baseline=killed or holdback, deadline=deadline)
        if killed or holdback:
            return await self._baseline(
                k=k,
                now=now,
                context=context,
                exclude=frozenset(exclude) | {item_id},
                assignment=assignment,
                killed=killed,
                holdback=holdback,
                deadline=deadline,
                extra_rules=extra_rules,
                unit=unit,
            )
        config = assignment.config
        segment = segment_id(context.tenant, context.surface, context.locale)
        segment_pop = self.shared.segment(segment)
        limit = self._deadline(deadline)
        neighbours: dict[str, Row] = {}
        degraded = not self._usable(limit)
        if not degraded:
            try:
                pairs, fetched = await self.reader.read_similar(
                    item_id,
                    config.neighbours_per_anchor,
                    segment=segment if segment_pop is None else None,
                    top_n=self.shared.top_n,
                    deadline=limit,
                )
                neighbours = {item_id: pairs}
                if fetched is not None:
                    segment_pop = self.shared.remember_segment(segment, fetched)
            except UnavailableError:
                degraded = True
        weighted = anchor_weights([], [item_id], now=now, config=config)
        inp = self._input(
            k=k,
            now=now,
            context=context,
            segment_pop=segment_pop,
            anchors=weighted,
            neighbours=neighbours,
            seen=frozenset(),
            exclude=frozenset(exclude) | {item_id},
            extra_rules=extra_rules,
            demoted=self.shared.demoted(config),
        )
        ranking = rank(inp, config)
        return self._answer(ranking, assignment, degraded, unit, now, inp)

    async def _baseline(
        self,
        *,
        k: int,
        now: float,
        context: Context,
        exclude: frozenset[str],
        assignment: Assignment,
        killed: bool,
        holdback: bool,
        deadline: float | None,
        extra_rules: Sequence[Rule],
        unit: str,
    ) -> Recommendation:
        """The safe baseline: popularity of the segment, then global (then last known), with
        the rules, under the base settings; no personal state. At most one Redis read (the
        segment's popularity, when this server does not track the segment yet)."""
        segment = segment_id(context.tenant, context.surface, context.locale)
        segment_pop = self.shared.segment(segment)
        degraded = False
        if segment_pop is None:
            limit = self._deadline(deadline)
            degraded = not self._usable(limit)
            if not degraded:
                try:
                    state = await self.reader.read_user(
                        user_id=None,
                        session_id=None,
                        max_recent=1,
                        with_seen=False,
                        segment=segment,
                        top_n=self.shared.top_n,
                        deadline=limit,
                    )
                    if state.segment_popularity is not None:
                        segment_pop = self.shared.remember_segment(
                            segment, state.segment_popularity
                        )
                except UnavailableError:
                    degraded = True
        inp = self._input(
            k=k,
            now=now,
            context=context,
            segment_pop=segment_pop,
            anchors=[],
            neighbours={},
            seen=frozenset(),
            exclude=exclude,
            extra_rules=extra_rules,
            demoted=frozenset(),
        )
        ranking = rank(inp, self.shared.base_config)
        if killed and ranking.items:
            ranking = Ranking(ranking.items, Stage.KILL_SWITCH)
        served = Assignment(
            variant=HOLDBACK_VARIANT if holdback else assignment.variant,
            config=self.shared.base_config,
            algo_version=BASELINE_ALGO,
        )
        return self._answer(ranking, served, degraded, unit, now, inp)

    def _input(
        self,
        *,
        k: int,
        now: float,
        context: Context,
        segment_pop: Popularity | None,
        anchors: list[Anchor],
        neighbours: dict[str, Row],
        seen: frozenset[str],
        exclude: frozenset[str],
        extra_rules: Sequence[Rule],
        demoted: frozenset[str],
        session_scores: dict[str, float] | None = None,
        interests: frozenset[str] = frozenset(),
    ) -> RankInput:
        shared = self.shared
        return RankInput(
            k=k,
            now=now,
            anchors=anchors,
            neighbours=neighbours,
            segment_popularity=segment_pop or EMPTY_POPULARITY,
            global_popularity=shared.global_popularity,
            last_known=shared.last_known,
            categories=shared.categories,
            unavailable=shared.unavailable,
            seen=seen,
            exclude=exclude,
            rules=(*shared.rules, *extra_rules) if extra_rules else shared.rules,
            tenant=context.tenant,
            surface=context.surface,
            demoted=demoted,
            session_scores=session_scores or {},
            interests=interests,
        )

    def _answer(
        self,
        ranking: Ranking,
        assignment: Assignment,
        degraded: bool,
        unit: str,
        now: float,
        inp: RankInput,
    ) -> Recommendation:
        return Recommendation(
            request_id=os.urandom(16).hex(),  # 32 hex digits, as uuid4().hex but 4× cheaper
            items=ranking.items,
            stage=ranking.stage,
            variant=assignment.variant,
            algo_version=assignment.algo_version,
            state_age_s=self.shared.state_age(now),
            degraded=degraded,
            unit=unit,
            now=now,
            rules=tuple(inp.rules),
            categories=inp.categories,
        )
