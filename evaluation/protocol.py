"""What a prequential replay runs: the log(s), the protocol, k and the replay's pacing knobs.

Kept apart from :mod:`evaluation.prequential` (which pulls in the worker and server code) so
the CLI can declare its options without importing them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from streamrec.datasets import DatasetFormat
from streamrec.errors import ConfigError

__all__ = ["PrequentialSpec", "Progress", "Protocol"]


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
    k: int = 20
    protocol: Protocol | None = None
    pipeline: int = 64
    concurrency: int = 32
    learn_batch: int = 5000
    refresh_every: int = 100

    def resolved_protocol(self) -> Protocol:
        """The protocol to run; raises ConfigError for a combination that makes no sense."""
        if self.k < 1:
            raise ConfigError(f"-k must be at least 1, got {self.k}")
        if min(self.pipeline, self.concurrency, self.learn_batch, self.refresh_every) < 1:
            raise ConfigError(
                "--pipeline, --concurrency, --refresh-every and the learn batch must be at least 1"
            )
        if self.test is None:
            if self.protocol not in (None, Protocol.PREQUENTIAL):
                raise ConfigError(f"--protocol {self.protocol.value} needs --test PATH")
            return Protocol.PREQUENTIAL
        if self.protocol == Protocol.PREQUENTIAL:
            raise ConfigError("--protocol prequential replays one log: drop --test")
        return self.protocol or Protocol.STREAMING

    @property
    def session_protocol(self) -> bool:
        """Session-based next-item targets (every event but a session's first)."""
        return self.fmt == DatasetFormat.SESSIONS and self.test is not None
