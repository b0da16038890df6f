"""The Redis keyspace: every key template streamrec reads or writes, in one place.

Writer (``streams``), reader (``serving``), monitors and tools build keys only through
:class:`Keyspace`; no other module spells a key. All keys start with the deployment's key
prefix, so one Redis can hold several deployments (and tests use a prefix per test).

Key families and their bounds (see README, "Redis memory model"):

==========================  =========  =====================================================
key                         type       content / bound
==========================  =========  =====================================================
``P:cv:{item}``             zset       neighbour → forward-decayed co-visitation weight; top K
                                       served, K + slack stored (``covis_top_k_slack``: 127
                                       at the defaults, listpack): ≤ 3.6 KB per item
``P:sn:{item}``             zset       user (session) → its last event ts on the item; newest
                                       S..S+S/8 (``session_index_sessions_per_item``), TTL;
                                       ≈ 33 B per entry while ≤ 128 (listpack): ≤ 4.2 KB per
                                       item at S = 112 (``MEMORY USAGE``, docs/architecture.md)
``P:pop``                   zset       item → forward-decayed popularity (global); top N
                                       stored, fewer served (``serving_popularity_top_n``)
``P:pop:{seg}``             zset       same per segment ``tenant|surface|locale`` (parts
                                       escaped, :func:`segment_id`); top N
``P:segs``                  zset       known segments → last update (bounded, LRU trimmed)
``P:u:{user}:r``            list       recent ``ts|item`` entries, newest first; W_max, TTL
``P:u:{user}:s``            zset       seen item → last ts; S_max, TTL
``P:u:{user}:a``            hash       category → forward-decayed affinity; C_max, TTL
``P:u:{user}:m``            hash       last_active, events; TTL
``P:it:cat``                hash       item → ``cat1,cat2`` (catalog, from items topic)
``P:it:na``                 set        unavailable items
``P:it:ver``                string     catalog version, incremented on every catalog change
``P:it:new``                zset       new-item pool: item → catalog announcement ts; newest
                                       ``exploration_pool_max``, older than
                                       ``exploration_max_age_s`` dropped (issue 20)
``P:ss:{session}:r``        list       recent ``ts|item`` entries of a session; W_max, TTL
``P:x:{request_id}``        hash       exposure: item → rank, plus ``_meta``; TTL = join window
``P:xo:{request_id}``       list       outcomes that arrived before their exposure; TTL
``P:ctr:imp`` / ``:clk``    zset       per-item impressions / clicks (decayed); top N
``P:ctr:sv``                hash       ``surface|variant|imp`` / ``|clk`` / ``|pos`` counters
``P:sh:{bucket}``           zset       item → impressions in one ``coverage_bucket_s`` time bucket
                                       (exposure ts // bucket); ≤ ``ctr_items_max`` members,
                                       TTL window + 2 buckets; ≈ 13 buckets live (coverage
                                       metrics, monitoring/coverage.py)
``P:off``                   hash       ``topic|partition`` → last applied offset
``P:meta``                  hash       landmark t0, schema version, last write ts
``P:rules``                 hash       rule id → ``schemas.rules.Rule`` JSON (Admin service)
``P:rules:ver``             string     INCR on every rule change; servers reload rules on change
``P:audit``                 stream     admin changes: ts who action target detail; MAXLEN ~10000
``P:exp``                   string     ``schemas.rules.ExperimentConfig`` JSON (Admin service)
``P:auth:pr``               hash       principal name → ``schemas.admin.PrincipalRecord`` JSON
``P:auth:tok``              hash       SHA-256 of a principal's token → principal name
``P:cfgv``                  hash       version → ``schemas.admin.ConfigVersion`` JSON; newest
                                       ``admin_versions_kept`` (1000) kept
``P:cfgv:seq``              string     INCR: the newest config version number
``P:cfg``                   string     run-time settings overrides JSON (Admin ``config``)
``P:exps``                  string     experiments with their lifecycle status (Admin)
``P:ks``                    hash       kill switches: ``["tenant","surface"]`` → KillSwitch JSON
``P:tr:r:{request_id}``     string     decision trace JSON (``schemas.controls``); TTL =
                                       ``trace_retention_s``; ≈ 1.6 KB at k = 10
``P:tr:i``                  zset       request id → ts of every stored trace; ≤ ``trace_max``
``P:tr:u:{user}``           set        request ids of a user's traces (for erasure); TTL
``P:stats:*``               hash/zset  monitor windows (drift, freshness)
``P:hb:{role}:{id}``        string     heartbeat with TTL
==========================  =========  =====================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SEGMENT_SEP = "|"


_SEGMENT_ESCAPES = str.maketrans({"%": "%25", SEGMENT_SEP: "%7C"})


def segment_id(tenant: str, surface: str, locale: str) -> str:
    """Segment key part for (tenant, surface, locale): ``tenant|surface|locale``.

    Each part is escaped (``%`` → ``%25``, ``|`` → ``%7C``) so two different triples never
    share a segment (``a|b`` + ``c`` vs ``a`` + ``b|c``). Parts without ``%`` or ``|``, the
    usual case, are stored as before; see docs/operations.md for the migration note.
    """
    return SEGMENT_SEP.join(part.translate(_SEGMENT_ESCAPES) for part in (tenant, surface, locale))


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key builders for one deployment prefix."""

    prefix: str

    # --- item graph and popularity ---------------------------------------------------------
    def covis(self, item_id: str) -> str:
        return f"{self.prefix}:cv:{item_id}"

    def session_index(self, item_id: str) -> str:
        """Users (sessions) that touched ``item_id`` → their last event ts on it (newest S)."""
        return f"{self.prefix}:sn:{item_id}"

    def popularity(self, segment: str | None = None) -> str:
        return f"{self.prefix}:pop" if segment is None else f"{self.prefix}:pop:{segment}"

    @property
    def segments(self) -> str:
        return f"{self.prefix}:segs"

    # --- users -------------------------------------------------------------------------------
    def user_recent(self, user_id: str) -> str:
        return f"{self.prefix}:u:{user_id}:r"

    def user_seen(self, user_id: str) -> str:
        return f"{self.prefix}:u:{user_id}:s"

    def user_affinity(self, user_id: str) -> str:
        return f"{self.prefix}:u:{user_id}:a"

    def user_meta(self, user_id: str) -> str:
        return f"{self.prefix}:u:{user_id}:m"

    # --- catalog -----------------------------------------------------------------------------
    @property
    def item_categories(self) -> str:
        return f"{self.prefix}:it:cat"

    @property
    def unavailable_items(self) -> str:
        return f"{self.prefix}:it:na"

    @property
    def catalog_version(self) -> str:
        """Counter the worker increments on every catalog change (readers reload on change)."""
        return f"{self.prefix}:it:ver"

    @property
    def new_items(self) -> str:
        """New-item pool: item → when the catalog first announced it (exploration)."""
        return f"{self.prefix}:it:new"

    def session_recent(self, session_id: str) -> str:
        """Recent ``ts|item`` entries of one session (when outcomes carry session_id)."""
        return f"{self.prefix}:ss:{session_id}:r"

    # --- exposure join -----------------------------------------------------------------------
    def exposure(self, request_id: str) -> str:
        return f"{self.prefix}:x:{request_id}"

    def early_outcomes(self, request_id: str) -> str:
        return f"{self.prefix}:xo:{request_id}"

    @property
    def item_impressions(self) -> str:
        return f"{self.prefix}:ctr:imp"

    @property
    def item_clicks(self) -> str:
        return f"{self.prefix}:ctr:clk"

    @property
    def surface_variant_ctr(self) -> str:
        return f"{self.prefix}:ctr:sv"

    def shown_bucket(self, bucket: int) -> str:
        """Items shown in exposures of one time bucket → impressions (coverage metrics)."""
        return f"{self.prefix}:sh:{bucket}"

    # --- bookkeeping -------------------------------------------------------------------------
    @property
    def offsets(self) -> str:
        return f"{self.prefix}:off"

    @staticmethod
    def offset_field(topic: str, partition: int) -> str:
        return f"{topic}{SEGMENT_SEP}{partition}"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    # --- serving configuration ---------------------------------------------------------------
    @property
    def rules(self) -> str:
        return f"{self.prefix}:rules"

    @property
    def rules_version(self) -> str:
        return f"{self.prefix}:rules:ver"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    @property
    def experiments(self) -> str:
        return f"{self.prefix}:exp"

    def bandit_arm(self, experiment: str, unit: str) -> str:
        """issue 20: string — a unit's sticky arm in a bandit-allocated experiment (TTL)."""
        return f"{self.prefix}:exp:arm:{experiment}{SEGMENT_SEP}{unit}"

    # --- admin: principals, versioned config, experiment lifecycle (issue 19) -------------
    @property
    def principals(self) -> str:
        return f"{self.prefix}:auth:pr"

    @property
    def principal_tokens(self) -> str:
        return f"{self.prefix}:auth:tok"

    @property
    def config_versions(self) -> str:
        return f"{self.prefix}:cfgv"

    @property
    def config_version_seq(self) -> str:
        return f"{self.prefix}:cfgv:seq"

    @property
    def runtime_config(self) -> str:
        return f"{self.prefix}:cfg"

    @property
    def experiment_records(self) -> str:
        return f"{self.prefix}:exps"

    # --- operational controls (kill switch, decision traces, erasure) ------------------------
    @property
    def kill_switch(self) -> str:
        return f"{self.prefix}:ks"

    def trace(self, request_id: str) -> str:
        return f"{self.prefix}:tr:r:{request_id}"

    @property
    def traces(self) -> str:
        """Index of stored traces: request id → ts (trimmed to ``trace_max``)."""
        return f"{self.prefix}:tr:i"

    def user_traces(self, user_id: str) -> str:
        return f"{self.prefix}:tr:u:{user_id}"

    def user_keys(self, user_id: str) -> tuple[str, ...]:
        """Every key that belongs to one user (or session) id alone (erasure deletes them).

        Shared keys that *name* the user are not here: the session-neighbour indexes
        (``sn:{item}`` members, see :attr:`session_index_pattern`) and the traces listed in
        :meth:`user_traces`.
        """
        return (
            self.user_recent(user_id),
            self.user_seen(user_id),
            self.user_affinity(user_id),
            self.user_meta(user_id),
            self.session_recent(user_id),
            self.user_traces(user_id),
        )

    @property
    def session_index_pattern(self) -> str:
        """SCAN pattern of every session-neighbour index (``sn:{item}``)."""
        return f"{self.prefix}:sn:*"

    # --- monitoring --------------------------------------------------------------------------
    def stats(self, name: str) -> str:
        return f"{self.prefix}:stats:{name}"

    def heartbeat(self, role: str, instance: str) -> str:
        return f"{self.prefix}:hb:{role}:{instance}"

    @property
    def pattern(self) -> str:
        """SCAN pattern matching every key of this prefix (used to delete throwaway prefixes)."""
        return f"{self.prefix}:*"


# --- value codecs -------------------------------------------------------------------------


def parse_recent(entries: Iterable[str | bytes]) -> list[tuple[float, str]]:
    """Decode ``ts|item`` list entries (newest first) as stored by the planner."""
    out: list[tuple[float, str]] = []
    for raw in entries:
        text = raw.decode() if isinstance(raw, bytes) else raw
        ts, sep, item = text.partition("|")
        if sep:
            try:
                out.append((float(ts), item))
            except ValueError:
                continue
    return out


def format_recent(ts: float, item_id: str) -> str:
    """Encode one ``ts|item`` list entry (the planner's millisecond precision)."""
    return f"{ts:.3f}|{item_id}"
