"""Popularity baseline, run exactly like streamrec: same state, same caches, same ranker.

:class:`PopularityBaseline` answers with the *real* :func:`serving.ranker.rank` given no
anchors, so only its backfill stages speak: segment popularity, then global popularity, then
the last-known list — the forward-decayed popularity lists the worker writes, read through the
same :class:`~serving.state_reader.StateReader` and :class:`~serving.shared_state.SharedState`
the streamrec :class:`~serving.recommender.Recommender` uses in the same replay (so both see
every refresh at the same moment). Seen items are filtered by the same rule
(``RankerConfig.exclude_seen``), read with the same round trip. It is the "most popular
(not yet seen) item" recommender, refreshed as the log replays. When nothing personal enters
(no seen filter), the answer only depends on the cached lists, so it is computed once per
cache refresh and reused — the same answer :func:`~serving.ranker.rank` would give again.
"""

from __future__ import annotations

from schemas.events import Context
from schemas.keyspace import segment_id
from serving.ranker import EMPTY_POPULARITY, RankInput, rank
from serving.shared_state import SharedState
from serving.state_reader import StateReader


class PopularityBaseline:
    """Most popular items (by segment, then global), minus seen items when the config says so."""

    def __init__(self, reader: StateReader, shared: SharedState) -> None:
        self.reader = reader
        self.shared = shared
        self._static: tuple[tuple[object, ...], list[str]] | None = None

    async def recommend(
        self,
        *,
        user_id: str | None,
        session_id: str | None,
        k: int,
        context: Context,
        now: float,
    ) -> list[str]:
        """Top-k item ids for a user (or session); raises UnavailableError if Redis fails."""
        unit = user_id or session_id
        if not unit:
            raise ValueError("recommend needs a user_id or a session_id")
        config = self.shared.plan.assign(unit).config
        segment = segment_id(context.tenant, context.surface, context.locale)
        segment_pop = self.shared.segment(segment)
        seen: frozenset[str] = frozenset()
        if config.exclude_seen or segment_pop is None:
            state = await self.reader.read_user(
                user_id=user_id or None,
                session_id=None if user_id else session_id,
                max_recent=config.max_anchors * 2,
                with_seen=config.exclude_seen,
                segment=segment if segment_pop is None else None,
                top_n=self.shared.top_n,
                deadline=None,
            )
            if config.exclude_seen:
                seen = state.seen | {item for _, item in state.recent}
            if state.segment_popularity is not None:
                segment_pop = self.shared.remember_segment(segment, state.segment_popularity)
        inputs = (
            segment,
            k,
            config,
            segment_pop,
            self.shared.global_popularity,
            self.shared.last_known,
            self.shared.categories,
            self.shared.unavailable,
        )
        static = self._static
        if not config.exclude_seen and static is not None and static[0] == inputs:
            return list(static[1])  # (== is an identity check for the unchanged caches)
        inp = RankInput(
            k=k,
            now=now,
            segment_popularity=segment_pop or EMPTY_POPULARITY,
            global_popularity=self.shared.global_popularity,
            last_known=self.shared.last_known,
            categories=self.shared.categories,
            unavailable=self.shared.unavailable,
            seen=seen,
            tenant=context.tenant,
            surface=context.surface,
        )
        answer = [item.item_id for item in rank(inp, config).items]
        if not config.exclude_seen:
            self._static = (inputs, answer)
        return list(answer)
