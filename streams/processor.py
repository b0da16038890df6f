"""Batch planner: turns a batch of decoded events into one Redis write plan. Pure, no I/O.

The planner is the business logic of the worker. It reads nothing itself: the caller gives it
the state it needs (recent items of the users in the batch, item categories, the forward-decay
landmark) and gets back a :class:`BatchPlan`, which :mod:`streams.state_store` applies in one
atomic Redis call together with the processed offsets.

Co-visitation. Each new event of a user is paired with the user's last ``W`` distinct items
inside the session gap. The pair weight is ``event weight × distance_decay^(d-1)`` where ``d``
is how many distinct items back the earlier item is, times the forward-decay factor
``exp((ts - t0) / tau)`` with a fixed landmark ``t0`` (so older contributions shrink relative
to newer ones without ever sweeping the data). The forward edge ``earlier → new`` gets the full
weight ("what comes next"), the backward edge ``new → earlier`` gets ``backward_weight`` of it,
which makes the neighbour lists usable for item pages too. A user coming back to an item
inside the window adds the self edge ``item → item`` with ``self_weight`` times the pair weight
at that distance: the item's repeat propensity, which the ranker uses only when told to
(``RankerConfig.self_neighbours``, for session data where repeat clicks are common targets).

Windows look only at a user's newest :attr:`ProcessorConfig.history_depth` recent entries:
what the worker reads back from Redis (or keeps in its cache) before a batch, and also what a
later event of the same user inside one batch sees. So a window never depends on where batch
boundaries fall (a rebalance, a restart or a slower fetch cuts batches elsewhere).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.settings import Settings, setting_attr, settings_values
from schemas.events import EventType, Exposure, Item, Outcome
from schemas.keyspace import Keyspace, segment_id
from schemas.topics import Topic

LN2 = math.log(2.0)
#: Largest forward-decay exponent we allow before the landmark must move (exp(600) ≈ 1e260).
MAX_DECAY_EXPONENT = 600.0
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """Tuning of the planner: the settings below, with their defaults."""

    window: int = setting_attr("covis_window")
    session_gap_s: float = setting_attr("covis_session_gap_s")
    distance_decay: float = setting_attr("covis_distance_decay")
    backward_weight: float = setting_attr("covis_backward_weight")
    covis_half_life_s: float = setting_attr("covis_half_life_s")
    self_weight: float = setting_attr("covis_self_weight")
    top_k: int = setting_attr("covis_top_k")
    top_k_slack: int = setting_attr("covis_top_k_slack")
    popularity_half_life_s: float = setting_attr("popularity_half_life_s")
    popularity_top_n: int = setting_attr("popularity_top_n")
    event_weights: Mapping[str, float] = setting_attr("event_weights")
    recent_max: int = setting_attr("user_recent_max")
    seen_max: int = setting_attr("user_seen_max")
    affinity_max: int = setting_attr("user_affinity_max")
    user_ttl_s: int = setting_attr("user_ttl_s")
    session_index_max: int = setting_attr("session_index_sessions_per_item")
    segments_max: int = setting_attr("segments_max")
    join_window_s: int = setting_attr("join_window_s")
    ctr_items_max: int = setting_attr("ctr_items_max")
    hot_row_pairs: int = setting_attr("apply_hot_row_pairs")
    new_items_max: int = setting_attr("exploration_pool_max")
    new_items_max_age_s: float = setting_attr("exploration_max_age_s")
    coverage_window_s: int = setting_attr("coverage_window_s")
    coverage_bucket_s: int = setting_attr("coverage_bucket_s")

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessorConfig:
        """Every field from its setting (a mapping copied, so the config owns it)."""
        return cls(**settings_values(cls, settings))

    @property
    def history_depth(self) -> int:
        """How many of a user's newest recent entries the windows look at.

        Enough to find ``window`` distinct items among repeats, at most what Redis keeps. The
        worker reads (and caches) exactly this many entries per user, and the planner trims a
        user's history to it after every event, so an event sees the same history whether the
        user's previous events were in the same batch or read back from Redis.
        """
        return min(self.recent_max, max(4 * self.window, 20))

    @property
    def covis_stored(self) -> int:
        """Neighbours a co-visitation row holds at most: K served plus the slack.

        Scores are sums (ZINCRBY), exact for a member that was never trimmed; a member trimmed
        and seen again restarts from zero. Trimming past ``K + slack`` instead of K means the
        top K served come out the same in any interleaving of the partitions as long as
        none of the final top K ever ranked below ``K + slack`` after a batch.
        """
        return self.top_k + self.top_k_slack

    def weight(self, event_type: EventType) -> float:
        return float(self.event_weights.get(str.__str__(event_type), 0.0))


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded event with its Kafka coordinates."""

    topic: Topic
    partition: int
    offset: int
    event: Outcome | Exposure | Item


@dataclass(slots=True)
class BatchPlan:
    """Everything one batch changes in Redis; applied atomically by the state store."""

    t0: float
    #: zset key → member → increment (co-visitation, popularity)
    zincr: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    #: zset key → number of top members to keep after the increments (co-visitation: K plus
    #: the slack, :attr:`ProcessorConfig.covis_stored`; popularity: N, more than is served)
    ztrim: dict[str, int] = field(default_factory=dict)
    #: zset key → member → score (seen sets), then keep the newest ``cap`` members
    zset: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    zset_cap: dict[str, int] = field(default_factory=dict)
    #: hash key → field → float increment (category affinity), then keep ``cap`` fields
    hincr: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    hincr_cap: dict[str, int] = field(default_factory=dict)
    #: list key → entries in chronological order (LPUSH'ed, so the newest ends up first)
    lpush: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    lpush_cap: dict[str, int] = field(default_factory=dict)
    #: session index key → user → event ts (ZADD GT), then keep the newest ``session_index_max``
    #: once ``session_index_over`` is passed (slack: trims are rare)
    sn: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    #: hash key → field → value
    hset: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    #: catalog changes, last one wins: item → "c1,c2" ("" = no categories) / available
    item_categories: dict[str, str] = field(default_factory=dict)
    item_available: dict[str, bool] = field(default_factory=dict)
    #: catalog time of each changed item (epoch s): first announcements join the new-item pool
    item_ts: dict[str, float] = field(default_factory=dict)
    expire: dict[str, int] = field(default_factory=dict)
    #: segment id → last event ts (segments list, LRU-bounded)
    segments: dict[str, float] = field(default_factory=dict)
    #: (request_id, "surface|variant", [(item, rank)]) for the exposure join
    exposures: list[tuple[str, str, list[tuple[str, int]]]] = field(default_factory=list)
    #: (request_id, item, event_type) outcomes to join with their exposure
    joins: list[tuple[str, str, str]] = field(default_factory=list)
    #: "topic|partition" → (first offset, last offset) of the events in this plan
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: newest event time of the batch (epoch s), for freshness bookkeeping
    newest_ts: float = 0.0
    events: int = 0
    #: users' recent items after the batch (newest first), for the worker's cache
    histories: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    #: bounds the apply script enforces
    segments_max: int = 1000
    join_window_s: int = 3600
    ctr_items_max: int = 100_000
    session_index_max: int = 0
    #: a co-visitation row with at least this many increments is applied as a skiplist
    hot_row_pairs: int = 0
    #: new-item pool bounds (exploration, issue 20): newest N, none older than the age
    new_items_max: int = 500
    new_items_max_age_s: float = 7 * 86400.0

    @property
    def session_index_over(self) -> int:
        """The size past which a session index is trimmed back to ``session_index_max``."""
        return session_index_over(self.session_index_max)

    @property
    def is_empty(self) -> bool:
        return not self.offsets


def session_index_over(keep: int) -> int:
    """A session index of ``keep`` users is trimmed (back to ``keep``) only beyond this size."""
    return keep + max(1, keep // 8)


def choose_landmark(first_ts: float) -> float:
    """Landmark t0 for forward decay: midnight UTC of the first event seen."""
    return math.floor(first_ts / DAY_S) * DAY_S


def decay_factor(ts: float, t0: float, half_life_s: float) -> float:
    """Forward-decay multiplier ``exp((ts - t0) / tau)`` with ``tau = half_life / ln 2``."""
    exponent = (ts - t0) * LN2 / half_life_s
    return math.exp(min(exponent, MAX_DECAY_EXPONENT))


class BatchPlanner:
    """Computes the :class:`BatchPlan` of a batch from the state read before it."""

    def __init__(self, keys: Keyspace, config: ProcessorConfig) -> None:
        self.keys = keys
        self.config = config
        self.depth = config.history_depth
        #: ``distance_decay ** (d - 1)`` for the distances d = 1..W of a window
        self._powers = tuple(config.distance_decay**k for k in range(config.window))

    def plan(
        self,
        records: Sequence[Record],
        *,
        recent: Mapping[str, list[tuple[float, str]]],
        categories: Mapping[str, list[str]],
        t0: float | None,
    ) -> BatchPlan:
        """Plan the writes of ``records`` (in consumption order).

        ``recent`` maps each user id of the batch to its recent items (newest first) as
        stored before the batch (only the newest ``config.history_depth`` are used);
        ``categories`` maps item ids to their categories.
        """
        if t0 is None:
            t0 = choose_landmark(min(_ts(r.event) for r in records)) if records else 0.0
        cfg = self.config
        plan = BatchPlan(
            t0=t0,
            segments_max=cfg.segments_max,
            join_window_s=cfg.join_window_s,
            ctr_items_max=cfg.ctr_items_max,
            session_index_max=cfg.session_index_max,
            hot_row_pairs=cfg.hot_row_pairs,
            new_items_max=cfg.new_items_max,
            new_items_max_age_s=cfg.new_items_max_age_s,
        )
        history = {user: list(items[: self.depth]) for user, items in recent.items()}
        cats = dict(categories)
        fields: dict[tuple[Topic, int], str] = {}  # offset field of each (topic, partition)
        offsets = plan.offsets
        for record in records:
            field_name = fields.get((record.topic, record.partition))
            if field_name is None:
                field_name = fields[(record.topic, record.partition)] = self.keys.offset_field(
                    record.topic.value, record.partition
                )
            first, _last = offsets.get(field_name, (record.offset, record.offset))
            offsets[field_name] = (min(first, record.offset), record.offset)
            event = record.event
            plan.events += 1
            ts = _ts(event)
            plan.newest_ts = max(plan.newest_ts, ts)
            if isinstance(event, Outcome):
                self._outcome(plan, event, history.setdefault(event.user_id, []), cats, ts)
            elif isinstance(event, Exposure):
                self._exposure(plan, event)
            else:
                self._item(plan, event, cats)
        plan.histories = history
        return plan

    # --- outcomes ----------------------------------------------------------------------------
    def _outcome(
        self,
        plan: BatchPlan,
        event: Outcome,
        history: list[tuple[float, str]],
        cats: dict[str, list[str]],
        ts: float,
    ) -> None:
        cfg, keys = self.config, self.keys
        ts_text = f"{ts:.3f}"  # format_recent's precision
        item = event.item_id
        user = event.user_id
        weight = cfg.weight(event.event_type)
        if weight > 0:
            zincr, ztrim, keep = plan.zincr, plan.ztrim, cfg.covis_stored
            backward = cfg.backward_weight
            item_key = keys.covis(item)
            cv = decay_factor(ts, plan.t0, cfg.covis_half_life_s) * weight
            window, back = self._neighbourhood(history, item, ts)
            powers = self._powers  # decay ** (distance - 1)
            for distance, earlier in enumerate(window):
                earlier_key = keys.covis(earlier)
                fwd = zincr[earlier_key]
                fwd[item] = fwd.get(item, 0.0) + cv * powers[distance]
                ztrim[earlier_key] = keep
            if window and backward > 0:
                bwd = zincr[item_key]
                for distance, earlier in enumerate(window):
                    bwd[earlier] = bwd.get(earlier, 0.0) + cv * powers[distance] * backward
                ztrim[item_key] = keep
            if back is not None and cfg.self_weight > 0:  # a repeat inside the window: self edge
                own = zincr[item_key]
                own[item] = own.get(item, 0.0) + cv * cfg.self_weight * powers[back - 1]
                ztrim[item_key] = keep
            pop = decay_factor(ts, plan.t0, cfg.popularity_half_life_s) * weight
            self._popularity(plan, keys.popularity(), item, pop)
            if event.context is not None:
                seg = segment_id(*event.context.segment)
                self._popularity(plan, keys.popularity(seg), item, pop)
                plan.segments[seg] = max(plan.segments.get(seg, 0.0), ts)
            item_cats = cats.get(item)
            if item_cats:
                affinity_key = keys.user_affinity(user)
                for category in item_cats:
                    aff = plan.hincr[affinity_key]
                    aff[category] = aff.get(category, 0.0) + pop
                    plan.hincr_cap[affinity_key] = cfg.affinity_max
                    plan.expire[affinity_key] = cfg.user_ttl_s
            entry = f"{ts_text}|{item}"
            # the history holds the ts as stored (millisecond precision), so a history read
            # back from Redis and one kept in the worker's cache compare gaps identically;
            # and no deeper than what is read back, so the user's next event in this batch
            # sees what it would see in the next batch (windows independent of batch cuts)
            history.insert(0, (float(ts_text), item))
            del history[self.depth :]
            self._push(plan, keys.user_recent(user), entry)
            if cfg.session_index_max > 0:  # the users whose recent list holds the item
                index_key = keys.session_index(item)
                users = plan.sn[index_key]
                stamp = float(ts_text)  # the recent list's precision
                users[user] = max(users.get(user, stamp), stamp)
                plan.expire[index_key] = cfg.user_ttl_s
            if event.session_id is not None and event.session_id != user:
                self._push(plan, keys.session_recent(event.session_id), entry)
        seen_key = keys.user_seen(user)
        plan.zset[seen_key][item] = ts
        plan.zset_cap[seen_key] = cfg.seen_max
        plan.expire[seen_key] = cfg.user_ttl_s
        meta_key = keys.user_meta(user)
        plan.hset[meta_key]["last_active"] = ts_text
        plan.expire[meta_key] = cfg.user_ttl_s
        if event.request_id is not None:
            plan.joins.append((event.request_id, item, event.event_type.value))

    def _neighbourhood(
        self, history: list[tuple[float, str]], item: str, ts: float
    ) -> tuple[list[str], int | None]:
        """The window and the repeat distance of ``item``, from one scan of ``history``.

        The window: the last W distinct items before ``ts`` inside the session gap, other than
        ``item`` (newest first). The repeat distance: where ``item`` itself last occurred,
        as the number of distinct other items after it plus one (``d`` of the window's
        distance decay), if that is within W and inside the gap; else None.
        """
        out: list[str] = []
        seen = {item}
        back: int | None = None
        gap, window = self.config.session_gap_s, self.config.window
        for earlier_ts, earlier in history:
            if ts - earlier_ts > gap:
                break
            if earlier in seen:
                if back is None and earlier == item:
                    back = len(out) + 1
                continue
            seen.add(earlier)
            out.append(earlier)
            if len(out) >= window:
                break
        return out, back

    def _popularity(self, plan: BatchPlan, key: str, item: str, inc: float) -> None:
        bucket = plan.zincr[key]
        bucket[item] = bucket.get(item, 0.0) + inc
        plan.ztrim[key] = self.config.popularity_top_n

    def _push(self, plan: BatchPlan, key: str, entry: str) -> None:
        plan.lpush[key].append(entry)
        plan.lpush_cap[key] = self.config.recent_max
        plan.expire[key] = self.config.user_ttl_s

    # --- exposures and catalog ---------------------------------------------------------------
    def _exposure(self, plan: BatchPlan, event: Exposure) -> None:
        sv = f"{event.context.surface}|{event.variant}"
        items = [(shown.item_id, shown.rank) for shown in event.items]
        plan.exposures.append((event.request_id, sv, items))
        # items shown per time bucket, for the live coverage / long-tail metrics
        cfg = self.config
        bucket_key = self.keys.shown_bucket(int(_ts(event) // cfg.coverage_bucket_s))
        shown = plan.zincr[bucket_key]
        for item, _rank in items:
            shown[item] = shown.get(item, 0.0) + 1.0
        plan.ztrim[bucket_key] = cfg.ctr_items_max
        plan.expire[bucket_key] = cfg.coverage_window_s + 2 * cfg.coverage_bucket_s

    def _item(self, plan: BatchPlan, event: Item, cats: dict[str, list[str]]) -> None:
        item = event.item_id
        plan.item_categories[item] = ",".join(event.categories)
        plan.item_available[item] = event.available
        plan.item_ts[item] = _ts(event)
        cats[item] = list(event.categories)


def _ts(event: Outcome | Exposure | Item) -> float:
    return event.ts.timestamp()
