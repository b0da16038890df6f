"""Typed settings for every streamrec process, read from ``STREAMREC_*`` environment variables.

One model, validated once at start. A bad value raises :class:`SettingsError` whose message
is one line naming the variable, so the CLI can print it and exit non-zero.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "STREAMREC_"

DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_REDIS_URL = "redis://127.0.0.1:16379/0"
DEFAULT_GRPC_ADDR = "127.0.0.1:50051"


class SettingsError(ValueError):
    """A setting has a value streamrec cannot use; the message is one line naming the variable."""


def _check_host_port(value: str, what: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT for {what}, got {value!r}")
    return value


PositiveFloat = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Connection, topic and tuning settings shared by the worker, the server and the tools."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

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
    covis_top_k: int = Field(100, ge=1, le=10_000, description="Neighbours kept per item (K).")
    popularity_half_life_s: float = Field(
        2 * 86400.0, gt=0, description="Half-life of popularity / trending (forward decay)."
    )
    popularity_top_n: int = Field(5000, ge=10, description="Items kept per popularity list.")
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
    user_seen_max: int = Field(500, ge=1, le=100_000, description="Seen items kept per user.")
    user_affinity_max: int = Field(50, ge=1, description="Categories kept per user affinity.")
    user_ttl_s: int = Field(30 * 86400, ge=60, description="TTL of every per-user key.")
    segments_max: int = Field(1000, ge=1, description="Popularity segments kept (LRU).")
    join_window_s: int = Field(
        3600, ge=1, description="How long an exposure (or an early outcome) waits to be joined."
    )
    ctr_items_max: int = Field(100_000, ge=100, description="Items kept in impression counts.")

    # --- metrics / admin ---------------------------------------------------------------------
    worker_metrics_port: int = Field(9464, ge=0, lt=65536, description="Worker /metrics port.")
    server_metrics_port: int = Field(9465, ge=0, lt=65536, description="Server /metrics port.")
    admin_token: SecretStr = Field(
        SecretStr("change-me"), description="Bearer token required by the Admin gRPC service."
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
    popularity_top_n: int = Field(
        200, ge=10, le=10_000, description="Popularity items cached per segment (and global)."
    )
    popularity_max_segments: int = Field(
        256, ge=1, le=100_000, description="Segments whose popularity is cached in-process."
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
    shutdown_grace_s: float = Field(
        5.0, ge=0, le=300, description="Grace for in-flight requests and the exposure flush."
    )
    ranker_max_anchors: int = Field(10, ge=1, le=100, description="Recent items used as anchors.")
    ranker_anchor_decay_s: PositiveFloat = Field(
        86_400.0, description="Anchor weight time constant: w = exp(-age / this) · position decay."
    )
    ranker_anchor_position_decay: float = Field(
        0.85, gt=0, le=1, description="Anchor weight factor per position back in recent history."
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
    ranker_demote_min_impressions: float = Field(
        0.0, ge=0, description="Demote items shown at least this often but never clicked (0 = off)."
    )
    ranker_demote_factor: float = Field(
        0.5, gt=0, le=1, description="Score multiplier of a demoted item."
    )

    # --- local stack -------------------------------------------------------------------------
    home: Path = Field(
        Path.home() / ".cache" / "streamrec",
        description="Where the local stack keeps jars, data, logs and pid files.",
    )
    kafka_heap: str = Field("512m", pattern=r"^\d+[mMgG]$", description="Local broker -Xmx.")

    # --- local stack: foundation (streamrec/stack.py) ------------------------------------------
    kafka_libs_dir: Path | None = Field(
        None,
        description="Where the local broker's jars are cached (default HOME/kafka/libs); "
        "several homes may share one directory so the jars are fetched once.",
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

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic (``outcomes``, ``exposures`` …)."""
        return f"{self.topic_prefix}.{name}"

    @property
    def kafka_is_local_default(self) -> bool:
        return self.kafka_bootstrap == DEFAULT_KAFKA_BOOTSTRAP

    @property
    def redis_is_local_default(self) -> bool:
        return self.redis_url == DEFAULT_REDIS_URL


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; raise :class:`SettingsError` with a one-line reason."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}: {message}") from exc


@lru_cache(maxsize=1)
def settings() -> Settings:
    """Process-wide settings, loaded once."""
    return load_settings()
