"""Typed settings for every streamrec process, read from ``STREAMREC_*`` environment variables.

One model, validated once at start. A bad value raises :class:`core.errors.SettingsError` (a
:class:`~core.errors.ConfigError`) whose message is one line naming the variable, so the CLI
can print it and exit non-zero.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from functools import lru_cache, partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from core.config_file import layered_values
from core.errors import SettingsError
from core.profiles import PROFILES

ENV_PREFIX = "STREAMREC_"

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:16379/0"
DEFAULT_GRPC_ADDR = "127.0.0.1:50051"


def _check_host_port(value: str, what: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT for {what}, got {value!r}")
    return value


PositiveFloat = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Connection, topic and tuning settings shared by the worker, the server and the tools."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- where settings come from (see core/config_file.py) -------------------------------
    config_file: str | None = Field(
        None,
        description="TOML file of settings (keys are setting names, e.g. written by "
        "`streamrec eval tune`); environment variables override it.",
    )
    profile: str | None = Field(
        None,
        description="Preset of tuning settings for a kind of log: "
        + ", ".join(f"{p.name} ({p.purpose})" for p in PROFILES.values())
        + ". The config file and environment variables override it.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: keyword arguments, environment, config file, profile, defaults."""
        init = init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
        layers = layered_values(settings_cls.model_fields, init=init)
        return (init_settings, env_settings, InitSettingsSource(settings_cls, layers.merged()))

    # --- connections -----------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        DEFAULT_KAFKA_BOOTSTRAP,
        description="Kafka bootstrap servers, comma-separated HOST:PORT. "
        "Left at the default, `streamrec stack up` starts a local broker there.",
    )
    redis_url: str = Field(
        DEFAULT_REDIS_URL,
        description="Redis URL (redis:// or rediss://). Left at the default, "
        "`streamrec stack up` starts a local redis-server there.",
    )
    grpc_addr: str = Field(DEFAULT_GRPC_ADDR, description="HOST:PORT the gRPC server listens on.")
    topic_prefix: str = Field(
        "streamrec",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="Prefix of every Kafka topic name (topic = PREFIX.name).",
    )
    key_prefix: str = Field(
        "sr",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Prefix of every Redis key this deployment owns.",
    )
    network_timeout_s: PositiveFloat = Field(5.0, description="Timeout of one network call.")

    # --- topics ------------------------------------------------------------------------------
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of the event topics.")
    consumer_group: str = Field("streamrec-worker", min_length=1, description="Worker group id.")

    # --- ingestion ---------------------------------------------------------------------------
    max_event_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest accepted event payload; larger → dead letter."
    )
    max_future_skew_s: float = Field(
        300.0, ge=0, description="How far in the future an event timestamp may be."
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="Events per processor batch.")
    batch_within_s: PositiveFloat = Field(
        0.02, description="Longest wait to fill a batch before processing what has arrived."
    )

    # --- resumable replay (issue 21: `streamrec replay` retries, --from-line) ---------------
    replay_transaction_events: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        description="Events per Kafka transaction of `streamrec replay`: each commits them "
        "together with the replay's checkpoint (a failure re-sends at most this many).",
    )
    replay_retry_attempts: int = Field(
        8,
        ge=1,
        le=1000,
        description="Attempts of one replay transaction against retriable broker errors "
        "before the replay gives up and prints the line to resume from.",
    )
    replay_retry_deadline_s: PositiveFloat = Field(
        120.0,
        description="No new attempt of a replay transaction starts this long after its first.",
    )
    replay_retry_max_s: PositiveFloat = Field(
        10.0, description="Longest wait between two attempts (exponential backoff from 0.5 s)."
    )

    # --- processing (co-visitation, popularity, user features) -----------------------------
    covis_window: int = Field(
        5, ge=1, le=50, description="W: each new event is paired with the user's last W items."
    )
    covis_session_gap_s: float = Field(
        1800.0, gt=0, description="Items older than this before the new event are not paired."
    )
    covis_distance_decay: float = Field(
        0.8, gt=0, le=1, description="Pair weight factor per step back in the window (d=1 → 1)."
    )
    covis_backward_weight: float = Field(
        0.5, ge=0, le=1, description="Weight of the reverse edge (new item → earlier item)."
    )
    covis_half_life_s: float = Field(
        14 * 86400.0, gt=0, description="Half-life of co-visitation weights (forward decay)."
    )
    # evaluation engineer (tuned by `streamrec eval prequential`, see docs/evaluation.md)
    covis_self_weight: float = Field(
        2.0,
        ge=0,
        description="Weight (× the pair weight at its distance) of the self edge covis(a→a) "
        "added when a user comes back to an item inside the window; 0 = no self edges.",
    )
    covis_top_k: int = Field(
        100, ge=1, le=10_000, description="K: neighbours per item served (read) at most."
    )
    covis_top_k_slack: int = Field(
        27,
        ge=0,
        le=10_000,
        description="Neighbours stored beyond K per item: cv:{item} is trimmed only past K + "
        "slack, so its top K come out the same whatever order partitions interleave in, as "
        "long as the true top K never fall below rank K + slack (100 + 27 ≤ 128 stays in "
        "Redis' compact listpack encoding); 0 = trim at K.",
    )
    popularity_half_life_s: float = Field(
        2 * 86400.0, gt=0, description="Half-life of popularity / trending (forward decay)."
    )
    popularity_top_n: int = Field(
        1000,
        ge=10,
        description="Items kept per popularity list (≈ 115 B each; ×segments, so keep it modest).",
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 1.0,
            "click": 1.0,
            "add_to_cart": 2.0,
            "purchase": 3.0,
            "like": 2.0,
            "dismiss": 0.0,
        },
        description="Weight of each event type in co-visitation and popularity (JSON object).",
    )
    user_recent_max: int = Field(50, ge=1, le=1000, description="Recent items kept per user.")
    user_seen_max: int = Field(
        128,
        ge=1,
        le=100_000,
        description="Seen items kept per user (≤ 128 stays in Redis' compact listpack encoding).",
    )
    user_affinity_max: int = Field(50, ge=1, description="Categories kept per user affinity.")
    user_ttl_s: int = Field(30 * 86400, ge=60, description="TTL of every per-user key.")
    session_index_sessions_per_item: int = Field(
        112,
        ge=0,
        le=10_000,
        description="S: users (sessions) kept per item in its session index sn:{item}, the "
        "newest by their last event on it (trimmed once S + S/8 is passed; 112 + 14 ≤ 128 "
        "stays in Redis' compact listpack encoding); 0 = no index.",
    )
    segments_max: int = Field(1000, ge=1, description="Popularity segments kept (LRU).")
    join_window_s: int = Field(
        3600, ge=1, description="How long an exposure (or an early outcome) waits to be joined."
    )
    ctr_items_max: int = Field(100_000, ge=100, description="Items kept in impression counts.")
    recent_cache_users: int = Field(
        50_000, ge=0, description="Users whose recent items the worker caches in memory (LRU)."
    )

    # --- Redis CPU per event of the apply script (issue 22) ----------------------------------
    apply_hot_row_pairs: int = Field(
        16,
        ge=0,
        description="A co-visitation row given at least this many increments by one batch "
        "becomes a skiplist zset (O(log K) increments instead of O(K) on a listpack; ~4x the "
        "bytes for those few head rows, the same members and scores); 0 = never.",
    )
    apply_script: str = Field(
        "current",
        pattern="^(current|baseline)$",
        description="Apply script of the worker: 'current', or 'baseline' (the script before "
        "issue 22, for `streamrec bench ingest`'s side-by-side figure; the same state).",
    )

    # --- operational controls (issue 19: kill switch, holdback, decision traces) -----------
    kill_switch_poll_s: PositiveFloat = Field(
        0.5,
        le=1.5,
        description="How often each server reads the kill switches from Redis (a switch "
        "reaches every server within this plus one Redis round trip; the promise is 2 s).",
    )
    holdback_share: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="Share of users (hash-stable per tenant) who always get the baseline "
        "answer (segment, then global popularity; rules applied), logged as variant 'holdback'.",
    )
    holdback_salt: str = Field(
        "holdback",
        min_length=1,
        max_length=64,
        description="Salt of the holdback hash; changing it draws a new holdback group.",
    )
    trace_retention_s: int = Field(
        7 * 86_400,
        ge=0,
        le=90 * 86_400,
        description="How long decision traces (streamrec admin explain) are kept; 0 = none.",
    )
    trace_max: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="At most this many traces are kept (the oldest go first): bounds Redis "
        "memory at about trace_max x 1.8 KB at k = 10 (≈ 180 MB at the default).",
    )
    trace_buffer_size: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Traces waiting to be written by the server; beyond it the oldest are "
        "dropped and counted.",
    )

    # --- metrics / admin ---------------------------------------------------------------------
    worker_metrics_port: int = Field(9464, ge=0, lt=65536, description="Worker /metrics port.")
    server_metrics_port: int = Field(9465, ge=0, lt=65536, description="Server /metrics port.")
    admin_token: SecretStr = Field(
        SecretStr("change-me"),
        description="Token of the Admin service's bootstrap-admin principal (the default, an "
        "empty or a short token is refused unless grpc_addr is loopback).",
    )
    # admin: versioned config (issue 19)
    admin_versions_kept: int = Field(
        1000,
        ge=10,
        le=100_000,
        description="Config versions kept in Redis for history / diff / rollback; each holds "
        "the whole snapshot of rules, experiments and run-time settings (~0.3 KB per rule).",
    )

    # --- serving -----------------------------------------------------------------------------
    algo_version: str = Field(
        "covis-v1", min_length=1, max_length=64, description="Ranker version in every answer."
    )
    request_timeout_s: PositiveFloat = Field(
        0.25,
        le=30,
        description="Server-side budget of one request's Redis reads; past it the "
        "answer falls back to in-process caches (a shorter client deadline wins).",
    )
    redis_retry_after_s: float = Field(
        0.5, ge=0, le=60, description="After a Redis error, requests skip Redis this long."
    )
    serving_refresh_s: PositiveFloat = Field(
        0.5,
        le=1.0,
        description="Refresh period of the popularity, rules, experiment, catalog "
        "and state-age caches (a rule change takes effect within about twice this).",
    )
    serving_popularity_top_n: int = Field(
        200, ge=10, le=10_000, description="Popularity items the server caches per segment."
    )
    serving_popularity_segments: int = Field(
        256, ge=1, le=100_000, description="Segments whose popularity is cached in-process."
    )
    serving_neighbour_cache_rows: int = Field(
        10_000,
        ge=0,
        le=10_000_000,
        description="Co-visitation rows the server keeps in process, kept exact by Redis "
        "invalidation messages (CLIENT TRACKING, Redis 6+); 4.5-11 KB each; 0 = off.",
    )
    serving_user_cache_users: int = Field(
        10_000,
        ge=0,
        le=10_000_000,
        description="Users (and sessions) whose recent and seen items the server keeps in "
        "process between two of their requests, kept exact the same way (an event of the user "
        "drops them); up to ~19 KB each at the user caps (20 recent, 128 seen); 0 = off.",
    )
    last_known_file: Path | None = Field(
        None,
        description="JSON file holding the last non-empty global popularity list, read "
        "at start when Redis is down; default <home>/serving/last_known.json.",
    )
    experiments_file: Path | None = Field(
        None, description="ExperimentConfig JSON file; a config set through Admin (Redis) wins."
    )
    exposure_buffer_size: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Exposure events held while Kafka is away; "
        "on overflow the oldest are dropped and counted.",
    )
    exposure_linger_ms: float = Field(
        50.0,
        ge=0,
        le=5000,
        description="How long the server gathers exposure events before producing them "
        "(one Kafka request per partition per round): longer costs less CPU per answer.",
    )
    shutdown_grace_s: float = Field(
        5.0, ge=0, le=300, description="Grace for in-flight requests and the exposure flush."
    )
    ranker_max_anchors: int = Field(10, ge=1, le=100, description="Recent items used as anchors.")
    ranker_anchor_decay_s: PositiveFloat = Field(
        86_400.0, description="Anchor weight time constant: w = exp(-age / this) · position decay."
    )
    ranker_anchor_position_decay: float = Field(
        0.5, gt=0, le=1, description="Anchor weight factor per position back in recent history."
    )
    ranker_neighbours_per_anchor: int = Field(
        50, ge=1, le=1000, description="Co-visitation neighbours read per anchor."
    )
    ranker_normalisation: str = Field(
        "row", pattern="^(row|none)$", description="row: covis(a,b)/Σ covis(a,·); none: raw."
    )
    ranker_popularity_exponent: float = Field(
        0.25, ge=0, le=2, description="β in score(b) = Σ_a w_a·covis(a,b) / pop(b)^β (0 = off)."
    )
    ranker_max_category_share: float = Field(
        0.5, gt=0, le=1, description="Most of the top-k one category may take (1 = no cap)."
    )
    ranker_exclude_seen: bool = Field(True, description="Drop items the user has already seen.")
    ranker_self_neighbours: bool = Field(
        False,
        description="Let an anchor's self edge (repeat clicks) recommend it again; for "
        "session / repeat-consumption data, together with ranker_exclude_seen=false.",
    )
    ranker_demote_min_impressions: float = Field(
        0.0, ge=0, description="Demote items shown at least this often but never clicked (0 = off)."
    )
    ranker_demote_factor: float = Field(
        0.5, gt=0, le=1, description="Score multiplier of a demoted item."
    )
    ranker_session_blend: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Weight of the session-neighbour source (V-SKNN-like) against co-visitation "
        "in the personal scores; 0 = off (no session-index reads at all).",
    )
    ranker_session_neighbours: int = Field(
        50, ge=1, le=1000, description="Most similar users (sessions) whose items are scored."
    )
    ranker_session_sample: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Newest users (sessions) read from each anchor's session index (≤ S).",
    )
    ranker_session_items: int = Field(
        20, ge=1, le=1000, description="Newest recent items read of each neighbour."
    )

    # --- exploration and new items (issue 20: serving/exploration.py, docs/exploration.md) ---
    exploration_share: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="Share of answer slots given to exploration (Thompson sampling); 0 = off.",
    )
    exploration_share_by_surface: dict[str, float] = Field(
        default_factory=dict,
        description="Per-surface exploration share (surface -> 0..0.5), over exploration_share.",
    )
    exploration_prior_alpha: float = Field(
        1.0, gt=0, description="Beta prior alpha (prior clicks) of an explored item's CTR."
    )
    exploration_prior_beta: float = Field(
        19.0, gt=0, description="Beta prior beta (prior non-clicks) of an explored item's CTR."
    )
    exploration_min_prob_above: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="An item stops being explored once P(its CTR > the surface CTR) < this.",
    )
    exploration_max_impressions: int = Field(
        1000, ge=1, description="An item leaves the new-item pool after this many impressions."
    )
    exploration_max_age_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="An item leaves the new-item pool this long after its catalog announcement.",
    )
    exploration_pool_max: int = Field(
        500, ge=1, le=100_000, description="Newest catalog items kept in the new-item pool."
    )
    # --- bandit allocation of experiment variants (issue 20: serving/bandit.py) -----------
    bandit_refresh_s: float = Field(
        5.0, gt=0.0, le=3600.0, description="Bandit allocation recomputed this often (s)."
    )
    bandit_draws: int = Field(
        10_000, ge=100, le=1_000_000, description="Posterior draws per bandit recomputation."
    )
    bandit_prior_alpha: float = Field(1.0, gt=0.0, description="Beta prior alpha of arm CTRs.")
    bandit_prior_beta: float = Field(1.0, gt=0.0, description="Beta prior beta of arm CTRs.")
    bandit_assignment_ttl_s: int = Field(
        30 * 86400,
        ge=60,
        description="A unit's sticky bandit arm expires this long after its first assignment.",
    )
    bandit_cache_max: int = Field(
        100_000, ge=0, le=10_000_000, description="Sticky arms remembered per server process."
    )
    # --- live catalog coverage / long-tail metrics (issue 20, monitoring/coverage.py) ------
    coverage_window_s: int = Field(
        3600, ge=60, description="Window of the coverage and long-tail metrics (s)."
    )
    coverage_bucket_s: int = Field(
        300,
        ge=10,
        description="Time bucket of the recently-shown item counts sh:{bucket} (s); the "
        "window is read as whole buckets (up to one bucket more than the window).",
    )
    coverage_head_share: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the available catalog, most popular first, that is the head; "
        "impressions of other items are long-tail impressions.",
    )

    # --- serving edge: TLS, API keys, rate limit, in-flight cap, pseudonymous ids (issue 19) -
    grpc_tls_cert_file: Path | None = Field(
        None,
        description="PEM server certificate (chain) of the gRPC port; set with "
        "grpc_tls_key_file to serve TLS only (plaintext clients are refused).",
    )
    grpc_tls_key_file: Path | None = Field(
        None, description="PEM private key of grpc_tls_cert_file."
    )
    grpc_tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle of client certificates; set, every client must present a "
        "certificate it signed (mutual TLS). Needs grpc_tls_cert_file.",
    )
    grpc_client_ca_file: Path | None = Field(
        None,
        description="Client side (streamrec recommend, streamrec admin): PEM CA bundle to "
        "trust the server's certificate with; set, the client connects over TLS.",
    )
    grpc_client_cert_file: Path | None = Field(
        None, description="Client side: PEM client certificate for mutual TLS."
    )
    grpc_client_key_file: Path | None = Field(
        None, description="Client side: PEM private key of grpc_client_cert_file."
    )
    grpc_client_api_key: SecretStr | None = Field(
        None, description="Client side: API key sent as x-api-key by streamrec recommend."
    )
    serving_api_keys: tuple[str, ...] = Field(
        (),
        description="API keys accepted from Recommender callers, each NAME:SHA256HEX (the "
        "SHA-256 of the key, never the key itself; JSON list). Empty = no key needed.",
    )
    serving_rate_limit_per_s: float = Field(
        0.0,
        ge=0,
        description="Recommender calls per second allowed to one caller (its API key's name, "
        "else its IP address), token bucket; 0 = no limit.",
    )
    serving_rate_limit_burst: int = Field(
        50, ge=1, le=1_000_000, description="Token bucket size: calls one caller may burst."
    )
    serving_max_in_flight: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Recommender and Admin calls the server handles at once; more are "
        "answered RESOURCE_EXHAUSTED at once; 0 = no cap.",
    )
    metrics_host: str | None = Field(
        None,
        description="Host /metrics of the server, worker and monitor binds; default: the "
        "host of grpc_addr (loopback unless the gRPC port is exposed).",
    )
    pii_policy: str = Field(
        "reject",
        pattern="^(reject|hash|off)$",
        description="User and session ids that look like an e-mail address or phone number: "
        "reject (events → dead letter with reason pii, requests → INVALID_ARGUMENT), hash "
        "(keyed HMAC-SHA256 with pii_hash_key, same result in the worker and the server) or "
        "off.",
    )
    pii_hash_key: SecretStr | None = Field(
        None, description="Secret of pii_policy=hash (at least 16 characters)."
    )

    # --- monitoring (thresholds) ------------------------------------------------------------
    # Used by monitoring/monitor.py (built-in alerts, `streamrec status`) and mirrored literally
    # in deploy/prometheus/alerts.yml (a test keeps them equal). Why each default: see the
    # "Thresholds" section of monitoring/monitor.py. WARN < CRIT is checked when the monitor is
    # built.
    lag_warn: int = Field(
        10_000,
        ge=1,
        description="Consumer lag (events) of one partition that warns: 20 batches of 500 "
        "queued, i.e. the worker is not keeping up rather than between two polls.",
    )
    lag_crit: int = Field(
        100_000, ge=1, description="Consumer lag (events) of one partition that is critical."
    )
    freshness_topics: tuple[str, ...] = Field(
        ("outcomes", "exposures"),
        description="Logical topics whose silence alerts (items is a compacted catalog "
        "topic and is quiet for long stretches by design).",
    )
    freshness_warn_s: PositiveFloat = Field(
        60.0,
        description="Age (s) of the newest processed event / state write that warns "
        "(silence of a live interaction stream for a minute is abnormal).",
    )
    freshness_crit_s: PositiveFloat = Field(
        300.0,
        description="Age (s) that is critical: one drift window without any new event, "
        "so trending state is visibly stale.",
    )
    event_lag_p99_warn_s: PositiveFloat = Field(
        30.0, description="p99 of processing time − event time (s) that warns."
    )
    event_lag_p99_crit_s: PositiveFloat = Field(
        300.0, description="p99 of processing time − event time (s) that is critical."
    )
    monitor_interval_s: PositiveFloat = Field(
        10.0, description="Period of the lag / freshness / drift evaluation timers."
    )
    drift_bucket_s: PositiveFloat = Field(
        10.0, description="Drift window bucket size (s); window sizes are multiples of it."
    )
    drift_window_s: PositiveFloat = Field(
        300.0, description="Current drift window (s) compared against the reference."
    )
    drift_reference_windows: int = Field(
        12, ge=1, le=288, description="Reference = this many windows before the current one."
    )
    drift_min_events: int = Field(
        500,
        ge=1,
        description="Events needed in both windows before a drift statistic is evaluated.",
    )
    drift_top_items: int = Field(
        50, ge=1, le=10_000, description="Items compared by the item-popularity drift (+ other)."
    )
    drift_seen_capacity: int = Field(
        1_000_000,
        ge=1000,
        description="Distinct users (and items) remembered for the cold-start ratio (~1.2 B each).",
    )
    drift_volume_ratio: float = Field(
        2.0,
        gt=1,
        description="Event rate ratio current/reference that alerts (≥ this or ≤ 1/this).",
    )
    drift_mix_psi: PositiveFloat = Field(
        0.25, description="PSI of the event-type mix that alerts ('major shift' rule of thumb)."
    )
    drift_items_js: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Jensen-Shannon divergence (bits) of the top-N item distribution that "
        "alerts; 0.1 ≈ a fifth of the traffic moving to items outside the reference head.",
    )
    drift_coldstart_delta: float = Field(
        0.10,
        gt=0,
        le=1,
        description="Increase of the never-seen user / item share (absolute) that alerts.",
    )
    drift_ctr_rel_drop: float = Field(
        0.3, gt=0, lt=1, description="Relative CTR drop per surface and variant that alerts."
    )
    drift_ctr_z: PositiveFloat = Field(
        3.5, description="Two-proportion z a CTR drop must also reach (significance guard)."
    )
    drift_ctr_min_impressions: int = Field(
        1000, ge=1, description="Impressions needed in each window before CTR is compared."
    )
    deadletter_rate_warn: float = Field(
        0.01, gt=0, lt=1, description="Dead-letter share of consumed messages that warns."
    )
    deadletter_rate_crit: float = Field(
        0.05, gt=0, le=1, description="Dead-letter share of consumed messages that is critical."
    )
    alert_min_duration_s: float = Field(
        60.0,
        ge=0,
        description="A condition must hold (and later clear) this long before an alert fires "
        "(resolves); also the Prometheus `for:`.",
    )
    alert_clear_ratio: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Hysteresis: an alert resolves only once the value is back past "
        "threshold × this (threshold / this for low-side thresholds).",
    )
    alert_stale_s: PositiveFloat = Field(
        900.0, description="A firing alert whose signal is not observed this long resolves."
    )
    serving_p99_warn_s: PositiveFloat = Field(
        0.05, description="Serving p99 latency (s) per method that warns."
    )
    serving_p99_crit_s: PositiveFloat = Field(
        0.25, description="Serving p99 latency (s) per method that is critical."
    )

    # --- drift (plans' thresholds): monitoring/drift.py plan signals, monitoring/retune.py ---
    # Same windows as the drift signals above (drift_window_s vs the drift_reference_windows
    # windows before it, drift_min_events / drift_ctr_min_impressions guards).
    drift_plan_kl: PositiveFloat = Field(
        0.1,
        description="KL divergence (nats, current ‖ reference, 0.5 pseudo-count per bin) of the "
        "event-type mix and of the top-N item mix (+ other) that is out of bounds.",
    )
    drift_plan_ctr_drop: float = Field(
        0.15,
        gt=0,
        lt=1,
        description="Relative CTR drop per surface and variant that is out of bounds; "
        "sustained for drift_plan_ctr_sustain_s it calls for a re-tune now.",
    )
    drift_plan_ctr_z: PositiveFloat = Field(
        2.0,
        description="Two-proportion z the plans' CTR drop must also reach (one-sided p ≈ 0.02).",
    )
    drift_plan_ctr_sustain_s: PositiveFloat = Field(
        900.0,
        description="A CTR drop is sustained when every evaluation over this many seconds saw "
        "it out of bounds (a gap longer than drift_window_s restarts the count).",
    )
    drift_plan_volume_change: PositiveFloat = Field(
        0.3,
        description="Relative change |rate / reference rate − 1| of interaction volume per "
        "topic that is out of bounds (up or down).",
    )
    drift_plan_coldstart_change: PositiveFloat = Field(
        0.25,
        description="Relative change |share / reference share − 1| of the never-seen user "
        "(item) share of events that is out of bounds (up or down).",
    )

    # --- SLOs (issue 21): objectives of the burn-rate rules (monitoring/slo.py) -------------
    # deploy/prometheus/alerts.yml's SLO groups are generated from these defaults by
    # scripts/slo-rules (a unit test keeps them equal); the windows and burn rates (SRE
    # workbook, 30-day budget) are fixed in monitoring/slo.py. See docs/operations.md, "SLOs".
    slo_availability_objective: float = Field(
        0.999,
        gt=0,
        lt=1,
        description="Share of Recommender answers per surface that must not be server errors "
        "(UNKNOWN, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, DATA_LOSS, UNIMPLEMENTED).",
    )
    slo_latency_objective: float = Field(
        0.99,
        gt=0,
        lt=1,
        description="Share of Recommender answers that must take at most "
        "slo_latency_threshold_s (0.99 = 'p99 under the threshold').",
    )
    slo_latency_threshold_s: PositiveFloat = Field(
        0.05,
        description="Server-side latency (s) of a good answer; must be a bucket bound of "
        "streamrec_serving_latency_seconds.",
    )
    slo_freshness_objective: float = Field(
        0.99,
        gt=0,
        lt=1,
        description="Share of rule evaluations in which the state the servers answer from is "
        "at most slo_freshness_max_age_s old.",
    )
    slo_freshness_max_age_s: PositiveFloat = Field(
        300.0, description="Largest age (s) of the served state that still counts as fresh."
    )
    slo_empty_answers_objective: float = Field(
        0.999,
        gt=0,
        lt=1,
        description="Share of Recommender answers per surface that must not be empty.",
    )
    slo_surfaces: tuple[str, ...] = Field(
        ("home", "pdp", "cart"),
        description="Surfaces that get their own `surface` label on the answer metrics (and "
        "SLOs); any other surface is counted as 'other' (keeps the label set bounded).",
    )
    prometheus_url: str | None = Field(
        None,
        description="Base URL of the Prometheus that evaluates the SLO rules (e.g. "
        "http://127.0.0.1:9090); `streamrec status` reads the remaining error budgets there.",
    )
    prometheus_timeout_s: PositiveFloat = Field(
        3.0, le=60, description="Timeout of one query of `streamrec status` to Prometheus."
    )

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parsed = urlparse(value)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ValueError(f"expected http(s)://HOST:PORT, got {value!r}")
        return value.rstrip("/")

    @field_validator("exploration_share_by_surface")
    @classmethod
    def _exploration_shares(cls, value: dict[str, float]) -> dict[str, float]:
        for surface, share in value.items():
            if not 0.0 <= share <= 0.5:
                raise ValueError(f"exploration share of {surface!r} must be 0-0.5, got {share}")
        return value

    @field_validator("slo_surfaces")
    @classmethod
    def _slo_surfaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for surface in value:
            if not surface or surface == "other" or len(surface) > 64:
                raise ValueError(f"surfaces must be 1-64 characters and not 'other': {surface!r}")
        return value

    # --- monitoring (wiring): worker monitor task, `streamrec monitor`, `streamrec status` ----
    monitor_metrics_port: int = Field(
        9466, ge=0, lt=65536, description="`streamrec monitor` /metrics port (0 = off)."
    )
    monitor_state_save_s: PositiveFloat = Field(
        120.0,
        description="How often the worker persists its monitor state (drift windows, open "
        "alerts) to Redis; also saved on shutdown and restored at start.",
    )
    monitor_instance: str = Field(
        "",
        pattern=r"^[A-Za-z0-9._-]{0,64}$",
        description="Name of this process in heartbeat and monitor-state keys (default: the "
        "host name; a second live process with the same name gets NAME-PID instead).",
    )

    # --- local stack -------------------------------------------------------------------------
    home: Path = Field(
        Path.home() / ".cache" / "streamrec",
        description="Where the local stack keeps jars, data, logs and pid files.",
    )
    kafka_heap: str = Field("512m", pattern=r"^\d+[mMgG]$", description="Local broker -Xmx.")

    # --- local stack: foundation (streamrec/stack/local.py) -----------------------------------
    kafka_libs_dir: Path | None = Field(
        None,
        description="Where the local broker's jars are cached (default HOME/kafka/libs); "
        "several homes may share one directory so the jars are fetched once.",
    )

    # --- monitoring stack: `stack up --with-monitoring` (streamrec/stack/monitoring.py) -----
    prometheus_port: int = Field(
        19090, ge=1, lt=65536, description="Port of the local Prometheus (127.0.0.1)."
    )
    alertmanager_port: int = Field(
        19095, ge=1, lt=65536, description="Port of the local Alertmanager (127.0.0.1)."
    )
    alert_webhook_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="Webhook the local Alertmanager delivers alerts to (default: the "
        "receiver URL written in deploy/alertmanager/alertmanager.yml).",
    )
    tools_dir: Path | None = Field(
        None,
        description="Where Prometheus, Alertmanager and promtool are unpacked from Debian's "
        "packages (default HOME/tools); several homes may share one directory.",
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for part in value.split(","):
            _check_host_port(part.strip(), "Kafka bootstrap server")
        return value

    @field_validator("grpc_addr")
    @classmethod
    def _grpc(cls, value: str) -> str:
        return _check_host_port(value, "gRPC address")

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in {"redis", "rediss", "unix"} or not (parsed.hostname or parsed.path):
            raise ValueError(f"expected redis://HOST:PORT/DB, got {value!r}")
        return value

    @model_validator(mode="after")
    def _serving_edge(self) -> Settings:  # issue 19: serving edge
        if (self.grpc_tls_cert_file is None) != (self.grpc_tls_key_file is None):
            raise ValueError(
                "STREAMREC_GRPC_TLS_CERT_FILE and STREAMREC_GRPC_TLS_KEY_FILE go together"
            )
        if self.grpc_tls_client_ca_file is not None and self.grpc_tls_cert_file is None:
            raise ValueError(
                "STREAMREC_GRPC_TLS_CLIENT_CA_FILE needs STREAMREC_GRPC_TLS_CERT_FILE (mutual TLS)"
            )
        if (self.grpc_client_cert_file is None) != (self.grpc_client_key_file is None):
            raise ValueError(
                "STREAMREC_GRPC_CLIENT_CERT_FILE and STREAMREC_GRPC_CLIENT_KEY_FILE go together"
            )
        for entry in self.serving_api_keys:
            name, sep, digest = entry.rpartition(":")
            if not sep or not name or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(
                    "STREAMREC_SERVING_API_KEYS entries are NAME:SHA256HEX "
                    "(64 lower-case hex digits)"
                )
        if self.pii_policy == "hash":
            key = self.pii_hash_key.get_secret_value() if self.pii_hash_key else ""
            if len(key) < 16:
                raise ValueError(
                    "STREAMREC_PII_POLICY=hash needs STREAMREC_PII_HASH_KEY "
                    "(at least 16 characters)"
                )
        return self

    @property
    def metrics_bind_host(self) -> str:
        """Where /metrics binds: metrics_host, else the host of grpc_addr (brackets dropped)."""
        if self.metrics_host:
            return self.metrics_host
        return self.grpc_addr.rpartition(":")[0].strip("[]")

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic (``outcomes``, ``exposures`` …)."""
        return f"{self.topic_prefix}.{name}"

    @property
    def kafka_is_local_default(self) -> bool:
        return self.kafka_bootstrap == DEFAULT_KAFKA_BOOTSTRAP

    @property
    def redis_is_local_default(self) -> bool:
        return self.redis_url == DEFAULT_REDIS_URL


def setting_default(name: str) -> Any:
    """The declared default of ``Settings.<name>`` (not the environment's value).

    For the config objects built from the settings (``ProcessorConfig``, ``RankerConfig``, the
    monitoring thresholds), so that their defaults are the settings' defaults instead of a
    second copy of the values.
    """
    return Settings.model_fields[name].get_default(call_default_factory=True)


def setting_field(name: str) -> Any:
    """A pydantic field with the default, bounds and description of ``Settings.<name>``.

    ``x: int = setting_field("ranker_max_anchors")`` in another model validates ``x`` exactly as
    the setting is validated (``ge=1, le=100`` …) and defaults to the setting's default.
    """
    source = Settings.model_fields[name]
    constrained: Any = source.annotation
    if source.metadata:
        constrained = Annotated[constrained, *source.metadata]
    return FieldInfo.from_annotated_attribute(
        constrained, Field(setting_default(name), description=source.description)
    )


def setting_attr(name: str, derive: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field whose default is ``Settings.<name>``'s default, or ``derive`` of it.

    The dataclass counterpart of :func:`setting_field`, for the frozen configs of the pure
    modules (``x: float = setting_attr("drift_mix_psi")``). The field remembers its setting (in
    its ``metadata["setting"]``) and ``derive``, so :func:`settings_values` builds it.
    """
    metadata = {"setting": name, "derive": derive}
    default = setting_default(name)
    if derive is not None:
        return dataclasses.field(default=derive(default), metadata=metadata)
    if isinstance(default, Mapping):  # one copy per instance
        return dataclasses.field(default_factory=partial(setting_default, name), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings_values(config: type[Any], settings: Settings) -> dict[str, Any]:
    """Keyword arguments of the dataclass ``config`` for its :func:`setting_attr` fields.

    Each is ``settings.<its setting>`` (through ``derive`` if it has one; a mapping copied, so
    the config owns it); fields of other kinds are left to the caller.
    """
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if "setting" not in f.metadata:
            continue
        value = getattr(settings, f.metadata["setting"])
        derive = f.metadata.get("derive")
        if derive is not None:
            value = derive(value)
        values[f.name] = dict(value) if isinstance(value, Mapping) else value
    return values


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; raise :class:`SettingsError` with a one-line reason."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # a check across settings names them itself
            raise SettingsError(message) from exc
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}: {message}") from exc


@lru_cache(maxsize=1)
def settings() -> Settings:
    """Process-wide settings, loaded once."""
    return load_settings()
