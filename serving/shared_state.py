"""In-process caches shared by all requests, refreshed by one background task.

Every ``refresh_s`` (≤ 1 s) one pipelined read fetches global popularity, the popularity of
every tracked segment, the rules / catalog versions, the experiment config and the newest
state write time; rules and catalog are reloaded only when their version changed. When Redis
is unreachable the caches keep their last values (and the state age keeps growing).

Last-known list: the last non-empty global popularity list, kept in memory and saved to
``last_known_file`` (JSON ``{"saved_at": ts, "items": [[item, score], …]}``, or a hand-written
``["item", …]`` seed) so a server started while Redis is down still answers from the list its
previous run saw; an operator may hand-write that file as a seed. If no item was ever known
(first start, Redis down, no file), the ranker has nothing to return and the server answers
UNAVAILABLE (counted as an empty answer) rather than an empty list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from core.errors import UnavailableError
from core.settings import Settings
from schemas.rules import ExperimentConfig, Rule
from serving import metrics
from serving.bandit import BanditPrior, arm_counts, thompson_shares
from serving.config import RankerConfig
from serving.config_versions import apply_overrides, validate_overrides
from serving.experiments import (
    Assignment,
    ExperimentPlan,
    ExperimentSource,
    load_experiment_file,
    parse_experiment,
)
from serving.exploration import EMPTY_TABLE, Arm, ArmTable, ExplorationConfig, surface_ctrs
from serving.ranker import EMPTY_POPULARITY, Popularity
from serving.state_reader import StateReader

log = logging.getLogger("streamrec.serving")
_UNSET = "\x00unset"
CTR_EVERY_TICKS = 10
CTR_TOP = 2000
#: the new-item pool and surface CTRs are read every this many ticks, and on catalog changes
EXPLORATION_EVERY_TICKS = 4
LAST_KNOWN_SAVE_S = 30.0


def load_last_known(path: Path) -> Popularity:
    """Read a last-known file; a missing or unreadable file gives an empty list (logged)."""
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return EMPTY_POPULARITY
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("ignoring last-known file %s: %s", path, exc)
        return EMPTY_POPULARITY
    entries = raw.get("items", []) if isinstance(raw, dict) else raw
    pairs: list[tuple[str, float]] = []
    if isinstance(entries, list):
        for rank, entry in enumerate(entries):
            if isinstance(entry, str) and entry:
                pairs.append((entry, float(len(entries) - rank)))
            elif (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and isinstance(entry[1], int | float)
            ):
                pairs.append((entry[0], float(entry[1])))
    return Popularity.of(pairs)


def _same_or(known: Popularity | None, fresh: Popularity) -> Popularity:
    """``known`` when ``fresh`` holds the same list: the ranker memoises per object."""
    return known if known is not None and known.items == fresh.items else fresh


def save_last_known(path: Path, popularity: Popularity) -> None:
    """Write the list atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = {"saved_at": time.time(), "items": [list(p) for p in popularity.items]}
    tmp.write_bytes(orjson.dumps(payload))
    os.replace(tmp, path)


def _arm_tables(
    arms: Sequence[Arm], ctrs: dict[str, float], config: ExplorationConfig
) -> tuple[dict[str, ArmTable], ArmTable]:
    """The arms worth exploring per surface, and against the prior's mean (off the loop)."""
    tables = {surface: ArmTable.build(arms, ctr, config) for surface, ctr in ctrs.items()}
    return tables, ArmTable.build(arms, config.prior_ctr, config)


@dataclass(frozen=True, slots=True)
class BanditSettings:
    """Bandit allocation knobs (the ``bandit_*`` settings)."""

    refresh_s: float
    draws: int
    prior: BanditPrior
    ttl_s: int
    cache_max: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BanditSettings:
        return cls(
            refresh_s=settings.bandit_refresh_s,
            draws=settings.bandit_draws,
            prior=BanditPrior(settings.bandit_prior_alpha, settings.bandit_prior_beta),
            ttl_s=settings.bandit_assignment_ttl_s,
            cache_max=settings.bandit_cache_max,
        )


class SharedState:
    """Popularity, catalog, rules, experiment plan, demotions and state age — cached."""

    def __init__(
        self,
        reader: StateReader,
        *,
        base_config: RankerConfig,
        algo_version: str,
        refresh_s: float = 0.5,
        top_n: int = 200,
        max_segments: int = 256,
        network_timeout_s: float = 5.0,
        last_known_file: Path | None = None,
        file_experiment: ExperimentConfig | None = None,
        exploration: ExplorationConfig | None = None,
        exploration_pool_max: int = 500,
        bandit: BanditSettings | None = None,
    ) -> None:
        self.reader = reader
        #: bandit allocation (issue 20): recomputed every ``bandit.refresh_s`` while the plan is
        #: bandit-allocated; sticky arms remembered per (experiment, unit), LRU-bounded
        self.bandit = (
            BanditSettings.from_settings(Settings.model_construct()) if bandit is None else bandit
        )
        self._bandit_next = 0.0
        self._arms: OrderedDict[tuple[str, str], str] = OrderedDict()
        #: exploration settings (serving/exploration.py); share 0 = nothing read, nothing done
        self.exploration = ExplorationConfig(share=0.0) if exploration is None else exploration
        self.exploration_pool_max = exploration_pool_max
        #: the new-item pool under the impressions limit, the CTR per surface, and the arms
        #: worth exploring per surface (and for surfaces without impressions: the prior's mean)
        self.exploration_arms: tuple[Arm, ...] = ()
        self.surface_ctr: dict[str, float] = {}
        self.exploration_tables: dict[str, ArmTable] = {}
        self.exploration_default = EMPTY_TABLE
        #: the ranker config of this server's settings; ``base_config`` adds the run-time
        #: overrides of the Admin ``config`` document (``runtime_overrides``)
        self.settings_config = base_config
        self.base_config = base_config
        self.runtime_overrides: dict[str, Any] = {}
        self._runtime_raw: str | None = None
        self.algo_version = algo_version
        self.refresh_s = refresh_s
        self.top_n = top_n
        self.max_segments = max_segments
        self.network_timeout_s = network_timeout_s
        self.last_known_file = last_known_file
        self.global_popularity = EMPTY_POPULARITY
        self.last_known = EMPTY_POPULARITY
        self.categories: dict[str, tuple[str, ...]] = {}
        self.unavailable: frozenset[str] = frozenset()
        self.rules: tuple[Rule, ...] = ()
        self.never_clicked: dict[str, float] = {}
        self.last_write: float | None = None
        self._segments: OrderedDict[str, Popularity] = OrderedDict()
        self._file_plan = (
            self._plan(file_experiment, "file") if file_experiment is not None else None
        )
        self.plan = self._file_plan or ExperimentPlan.default(
            base=base_config, algo_version=algo_version
        )
        self._rules_version: str | None = _UNSET
        self._catalog_version: str | None = _UNSET
        self._experiments_raw: str | None = _UNSET
        self._ticks = 0
        self._last_known_dirty = False
        self._last_saved = 0.0
        self._task: asyncio.Task[None] | None = None
        self.refreshed_ok = 0

    @classmethod
    def from_settings(cls, reader: StateReader, settings: Settings) -> SharedState:
        """Build from settings; a bad ``experiments_file`` raises ConfigError."""
        experiment = (
            load_experiment_file(settings.experiments_file) if settings.experiments_file else None
        )
        return cls(
            reader,
            base_config=RankerConfig.from_settings(settings),
            algo_version=settings.algo_version,
            refresh_s=settings.serving_refresh_s,
            top_n=settings.serving_popularity_top_n,
            max_segments=settings.serving_popularity_segments,
            network_timeout_s=settings.network_timeout_s,
            last_known_file=settings.last_known_file
            or settings.home / "serving" / "last_known.json",
            file_experiment=experiment,
            exploration=ExplorationConfig(
                share=settings.exploration_share,
                share_by_surface=dict(settings.exploration_share_by_surface),
                prior_alpha=settings.exploration_prior_alpha,
                prior_beta=settings.exploration_prior_beta,
                min_prob_above=settings.exploration_min_prob_above,
                max_impressions=settings.exploration_max_impressions,
                max_age_s=settings.exploration_max_age_s,
            ),
            exploration_pool_max=settings.exploration_pool_max,
            bandit=BanditSettings.from_settings(settings),
        )

    def _plan(self, experiment: ExperimentConfig, source: ExperimentSource) -> ExperimentPlan:
        return ExperimentPlan.build(
            experiment, base=self.base_config, algo_version=self.algo_version, source=source
        )

    # --- lookups used per request --------------------------------------------------------------
    def segment(self, segment: str) -> Popularity | None:
        """Cached popularity of a segment, or None when it is not tracked yet."""
        popularity = self._segments.get(segment)
        if popularity is not None:
            self._segments.move_to_end(segment)
        return popularity

    def remember_segment(self, segment: str, pairs: Sequence[tuple[str, float]]) -> Popularity:
        """Track a segment fetched by a request; it is refreshed from now on."""
        popularity = Popularity.of(pairs)
        self._segments[segment] = popularity
        self._segments.move_to_end(segment)
        while len(self._segments) > self.max_segments:
            self._segments.popitem(last=False)
        return popularity

    def demoted(self, config: RankerConfig) -> frozenset[str]:
        threshold = config.demote_min_impressions
        if threshold <= 0 or not self.never_clicked:
            return frozenset()
        return frozenset(i for i, imp in self.never_clicked.items() if imp >= threshold)

    def state_age(self, now: float) -> float:
        """now − newest state write; -1 when unknown."""
        return max(0.0, now - self.last_write) if self.last_write is not None else -1.0

    # --- refresh --------------------------------------------------------------------------------
    async def refresh(self) -> bool:
        """One refresh tick; False (and caches unchanged) when Redis is unavailable."""
        deadline = asyncio.get_running_loop().time() + self.network_timeout_s
        try:
            read = await self.reader.read_shared(
                list(self._segments), top_n=self.top_n, deadline=deadline
            )
            self.global_popularity = _same_or(
                self.global_popularity, Popularity.of(read.global_popularity)
            )
            for segment, pairs in read.segments.items():
                if segment in self._segments:
                    self._segments[segment] = _same_or(
                        self._segments[segment], Popularity.of(pairs)
                    )
            if self.global_popularity and self.global_popularity != self.last_known:
                self.last_known = self.global_popularity
                self._last_known_dirty = True
            self.last_write = read.last_write
            if read.rules_version != self._rules_version:
                await self._load_rules(deadline)
                self._rules_version = read.rules_version
            catalog_changed = read.catalog_version != self._catalog_version
            if catalog_changed:
                self.categories, self.unavailable = await self.reader.read_catalog(
                    deadline=deadline
                )
                self._catalog_version = read.catalog_version
            if self._wants_exploration() and (
                catalog_changed or self._ticks % EXPLORATION_EVERY_TICKS == 0
            ):
                await self._load_exploration(deadline)
            if read.runtime_config != self._runtime_raw:
                self._load_runtime_config(read.runtime_config)
            if read.experiments != self._experiments_raw:
                self._load_experiment(read.experiments)
            if self.plan.bandit and time.monotonic() >= self._bandit_next:
                await self._reallocate(deadline)
            if self._ticks % CTR_EVERY_TICKS == 0 and self._wants_ctr():
                self.never_clicked = {
                    item: imp
                    for item, imp, clicks in await self.reader.read_ctr(CTR_TOP, deadline=deadline)
                    if clicks <= 0
                }
        except UnavailableError as exc:
            log.debug("shared state refresh failed: %s", exc)
            return False
        finally:
            self._ticks += 1
            if self.last_write is not None:
                metrics.STATE_AGE.set(self.state_age(time.time()))
        self.refreshed_ok += 1
        return True

    # --- bandit allocation (issue 20) ------------------------------------------------------
    async def _reallocate(self, deadline: float) -> None:
        """Recompute the bandit plan's shares from the per-variant counters (off the loop)."""
        self._bandit_next = time.monotonic() + self.bandit.refresh_s
        plan = self.plan
        arms = [v.name for v in plan.experiment.variants]
        counters = await self.reader.read_variant_counters(deadline=deadline)
        counts = arm_counts(counters, arms)
        shares = await asyncio.to_thread(
            thompson_shares,
            counts,
            min_share=plan.experiment.min_share,
            prior=self.bandit.prior,
            draws=self.bandit.draws,
        )
        if self.plan is plan:  # not replaced meanwhile (a new experiment starts over)
            self.plan = plan.with_shares(shares)
            log.debug("bandit %s shares %s", plan.experiment.name, self.plan.shares)

    async def assign(self, unit: str, *, deadline: float | None = None) -> Assignment:
        """The arm of ``unit``: the plan's hash for a fixed split; for a bandit, the unit's
        sticky arm (process cache, else Redis ``SET NX GET`` with a TTL: the first arm it got
        on any server). Redis down: the current allocation's draw, not remembered."""
        plan = self.plan
        draw = plan.assign(unit)
        if not plan.bandit:
            return draw
        key = (plan.experiment.name, unit)
        known = self._arms.get(key)
        if known is not None:
            self._arms.move_to_end(key)
            assignment = plan.assignment_of(known)
            if assignment is not None:
                return assignment
        if not self.reader.available:  # circuit open: do not wait on a Redis that is away
            return draw
        try:
            arm = await self.reader.claim_arm(
                plan.experiment.name, unit, draw.variant, ttl_s=self.bandit.ttl_s, deadline=deadline
            )
        except UnavailableError:
            return draw
        assignment = plan.assignment_of(arm)
        if assignment is None:  # stored arm no longer takes units: the current draw
            return draw
        if self.bandit.cache_max > 0:
            self._arms[key] = arm
            while len(self._arms) > self.bandit.cache_max:
                self._arms.popitem(last=False)
        return assignment

    def _wants_exploration(self) -> bool:
        config = self.exploration
        return config.share > 0.0 or any(v > 0.0 for v in config.share_by_surface.values())

    async def _load_exploration(self, deadline: float) -> None:
        """The new-item pool's arms under the impressions limit, and the surface CTRs."""
        pool, counters = await self.reader.read_exploration(
            self.exploration_pool_max, deadline=deadline
        )
        limit = self.exploration.max_impressions
        self.exploration_arms = tuple(
            Arm(item, imp, clk, ts) for item, ts, imp, clk in pool if imp < limit
        )
        self.surface_ctr = surface_ctrs(counters)
        self.exploration_tables, self.exploration_default = await asyncio.to_thread(
            _arm_tables, self.exploration_arms, self.surface_ctr, self.exploration
        )

    def exploration_table(self, surface: str) -> ArmTable:
        """The arms worth exploring on ``surface`` (judged against its CTR)."""
        return self.exploration_tables.get(surface, self.exploration_default)

    def _wants_ctr(self) -> bool:
        configs = [self.base_config, *(a.config for _, a in self.plan.assignments)]
        return any(c.demote_min_impressions > 0 for c in configs)

    async def _load_rules(self, deadline: float) -> None:
        rules: list[Rule] = []
        for rule_id, raw in (await self.reader.read_rules(deadline=deadline)).items():
            try:
                rules.append(Rule.model_validate_json(raw))
            except ValidationError as exc:
                log.warning("ignoring stored rule %s: %s", rule_id, exc.errors()[0]["msg"])
        self.rules = tuple(sorted(rules, key=lambda r: r.id))

    def _load_runtime_config(self, raw: str | None) -> None:
        """Apply the run-time overrides (validated again: a bad document is ignored, logged)."""
        self._runtime_raw = raw
        try:
            overrides = validate_overrides(orjson.loads(raw)) if raw is not None else {}
            base = apply_overrides(self.settings_config, overrides)
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            log.warning("ignoring stored run-time config: %s", exc)
            return
        self.runtime_overrides, self.base_config = overrides, base
        if self._file_plan is not None:
            self._file_plan = self._plan(self._file_plan.experiment, "file")
        self._load_experiment(self._experiments_raw if self._experiments_raw != _UNSET else None)

    def _load_experiment(self, raw: str | None) -> None:
        self._experiments_raw = raw
        if raw is None:
            self.plan = self._file_plan or ExperimentPlan.default(
                base=self.base_config, algo_version=self.algo_version
            )
            return
        try:
            old, self.plan = self.plan, self._plan(parse_experiment(raw), "redis")
            if self.plan.bandit and old.experiment == self.plan.experiment:
                self.plan = self.plan.with_shares(old.shares)  # same bandit: keep its shares
            self._bandit_next = 0.0  # a (new) bandit plan is allocated on the next tick
        except ValueError as exc:
            log.warning("ignoring stored experiment config: %s", exc)

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the last-known file, try a first refresh, start the refresh loop. Idempotent."""
        if self._task is not None:
            return
        if self.last_known_file is not None and not self.last_known:
            self.last_known = await asyncio.to_thread(load_last_known, self.last_known_file)
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="streamrec-shared-state")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()
            self.reader.publish_cache_metrics()
            await self._maybe_save(force=False)

    async def _maybe_save(self, *, force: bool) -> None:
        now = time.monotonic()
        due = force or now - self._last_saved >= LAST_KNOWN_SAVE_S
        if self.last_known_file is None or not self._last_known_dirty or not due:
            return
        try:
            await asyncio.to_thread(save_last_known, self.last_known_file, self.last_known)
        except OSError as exc:
            log.warning("cannot save last-known list to %s: %s", self.last_known_file, exc)
        self._last_known_dirty = False
        self._last_saved = now

    async def stop(self) -> None:
        """Cancel and await the refresh loop; save the last-known list. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.shield(self._maybe_save(force=True))
