"""What a prequential replay runs: the log(s), the protocol, k and the replay's pacing knobs.

Kept apart from :mod:`evaluation.prequential` (which pulls in the worker and server code) so
the CLI can declare its options without importing them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from core.errors import ConfigError
from evaluation.datasets import DatasetFormat
from evaluation.holdout import check_days

__all__ = ["LEVEL", "RESAMPLES", "SEED", "PrequentialSpec", "Progress", "Protocol"]

# Bootstrap intervals of every reported metric (evaluation.intervals; docs/evaluation.md):
# declared here, where the CLI reads its option defaults without importing numpy.
#: coverage of every interval
LEVEL = 0.95
#: bootstrap resamples
RESAMPLES = 1000
#: default seed of the bootstrap (``--seed``)
SEED = 0


class Protocol(StrEnum):
    """How the log is replayed (see :mod:`evaluation.prequential`)."""

    PREQUENTIAL = "prequential"
    STREAMING = "streaming"
    BATCH = "batch"


#: progress(phase, events done, events total)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class PrequentialSpec:
    """What to replay and how."""

    fmt: DatasetFormat
    path: Path
    test: Path | None = None
    #: replay the last N days of ``path`` as the test log (exclusive with ``test``)
    holdout_days: float | None = None
    k: int = 20
    protocol: Protocol | None = None
    pipeline: int = 64
    concurrency: int = 32
    learn_batch: int = 5000
    refresh_every: int = 100
    #: seed of the bootstrap intervals (and of the user sample)
    seed: int = SEED
    #: predict only for this seeded fraction of the users (sessions); every event is still
    #: learned (``--sample``; None = every user)
    sample: float | None = None

    def resolved_protocol(self) -> Protocol:
        """The protocol to run; raises ConfigError for a combination that makes no sense."""
        if self.k < 1:
            raise ConfigError(f"-k must be at least 1, got {self.k}")
        if min(self.pipeline, self.concurrency, self.learn_batch, self.refresh_every) < 1:
            raise ConfigError(
                "--pipeline, --concurrency, --refresh-every and the learn batch must be at least 1"
            )
        if self.sample is not None and not 0 < self.sample <= 1:
            raise ConfigError(f"--sample must be in (0, 1], got {self.sample}")
        if self.holdout_days is not None:
            if self.test is not None:
                raise ConfigError("--holdout-days tests on the end of PATH itself: drop --test")
            check_days(self.holdout_days)
        if not self.has_test:
            if self.protocol not in (None, Protocol.PREQUENTIAL):
                raise ConfigError(
                    f"--protocol {self.protocol.value} needs a test log: "
                    "--test PATH or --holdout-days D"
                )
            return Protocol.PREQUENTIAL
        if self.protocol == Protocol.PREQUENTIAL:
            raise ConfigError(
                "--protocol prequential replays one log: drop --test / --holdout-days"
            )
        return self.protocol or Protocol.STREAMING

    def in_sample(self, user: str) -> bool:
        """Whether ``user``'s targets are predicted: all without a sample, else a seeded hash
        of the user (the same users for every run of one seed, whatever the settings)."""
        if self.sample is None:
            return True
        digest = zlib.crc32(f"{self.seed}:{user}".encode())
        return digest < self.sample * 2**32

    @property
    def has_test(self) -> bool:
        """A test log to replay after the training log (``--test`` or ``--holdout-days``)."""
        return self.test is not None or self.holdout_days is not None

    @property
    def session_protocol(self) -> bool:
        """Session-based next-item targets (every event but a session's first)."""
        return self.fmt == DatasetFormat.SESSIONS and self.has_test
