"""Known-answer synthetic experiment logs, for tests and demos of the experiment analysis.

Users are assigned to arms with the given shares (user-level randomisation, as the serving
layer's hash bucketing does); each user makes a fixed number of requests. A request gets a
click on one of its items with the arm's CTR, a clicked item is bought with the arm's
purchase rate (value drawn from an exponential distribution). Exposures and outcomes are
plain ``dict`` records in the ``exposure.v1`` / ``outcome.v1`` wire format, in time order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from evaluation.logs import gc_paused

Record = dict[str, Any]


@dataclass(frozen=True)
class ArmSpec:
    """The true behaviour of one experiment arm."""

    name: str
    share: float = 0.5
    ctr: float = 0.10
    purchase_rate: float = 0.2
    mean_value: float = 30.0
    latency_ms: float = 20.0
    fallback_rate: float = 0.0
    error_rate: float = 0.0


@dataclass
class SyntheticLogs:
    """Generated exposure and outcome records (wire format)."""

    exposures: list[Record] = field(default_factory=list)
    outcomes: list[Record] = field(default_factory=list)


def synthetic_experiment(
    arms: Sequence[ArmSpec],
    *,
    users: int,
    requests_per_user: int = 2,
    items_per_request: int = 3,
    catalog: int = 500,
    organic_per_request: float = 0.0,
    drop_exposure_share: float = 0.0,
    seed: int = 0,
    start_ts: float = 1_700_000_000.0,
) -> SyntheticLogs:
    """Generate one experiment's logs.

    ``organic_per_request`` adds that many organic (unattributed) outcomes per request on
    average; ``drop_exposure_share`` removes that share of exposures after generating their
    outcomes, so their outcomes carry an unknown ``request_id``.
    """
    if not arms or users < 1 or requests_per_user < 1 or items_per_request < 1:
        raise ValueError("need at least one arm, one user, one request and one item")
    if not 0 < items_per_request <= catalog:
        raise ValueError("items_per_request must be in [1, catalog]")
    rng = np.random.default_rng(seed)
    shares = np.array([a.share for a in arms], dtype=np.float64)
    assignment = rng.choice(len(arms), size=users, p=shares / shares.sum())
    n = users * requests_per_user
    request_user = rng.permutation(np.repeat(np.arange(users), requests_per_user))
    arm_of = assignment[request_user]

    def per_arm(attr: str) -> NDArray[np.float64]:
        values = np.array([getattr(a, attr) for a in arms], dtype=np.float64)
        picked: NDArray[np.float64] = values[arm_of]
        return picked

    # every random draw is made up front, one vector per quantity
    first_item = rng.integers(catalog, size=n)
    fallback = rng.random(n) < per_arm("fallback_rate")
    error = rng.random(n) < per_arm("error_rate")
    latency = rng.gamma(4.0, per_arm("latency_ms") / 4.0)
    dropped = rng.random(n) < drop_exposure_share
    clicked = rng.random(n) < per_arm("ctr")
    click_pos = rng.integers(items_per_request, size=n)
    click_delay = rng.uniform(1.0, 30.0, size=n)
    bought = rng.random(n) < per_arm("purchase_rate")
    value = rng.exponential(per_arm("mean_value"))
    organic = rng.poisson(organic_per_request, size=n)
    organic_items = rng.integers(catalog, size=int(organic.sum()))
    logs = SyntheticLogs()
    organic_at = 0
    with gc_paused():  # ~10^5 small dicts: avoid repeated full collections
        for i in range(n):
            arm = arms[int(arm_of[i])]
            ts = start_ts + i * 0.5
            user_id = f"u{request_user[i]}"
            request_id = f"r{i}"
            items = [f"i{(int(first_item[i]) + j) % catalog}" for j in range(items_per_request)]
            extra: dict[str, str] = {}
            if fallback[i]:
                extra["fallback"] = "global_popularity"
            if error[i]:
                extra["error"] = "redis_timeout"
            if not dropped[i]:
                logs.exposures.append(
                    {
                        "schema": "exposure.v1",
                        "request_id": request_id,
                        "user_id": user_id,
                        "ts": ts,
                        "items": [
                            {"item_id": item, "rank": rank, "score": round(1.0 / rank, 4)}
                            for rank, item in enumerate(items, start=1)
                        ],
                        "context": {
                            "tenant": "shop",
                            "surface": "home",
                            "locale": "en-GB",
                            "extra": extra,
                        },
                        "variant": arm.name,
                        "algo_version": f"{arm.name}-v1",
                        "latency_ms": round(float(latency[i]), 3),
                    }
                )
            if clicked[i]:
                item = items[int(click_pos[i])]
                click_ts = ts + float(click_delay[i])
                logs.outcomes.append(_outcome(user_id, item, "click", click_ts, request_id))
                if bought[i]:
                    logs.outcomes.append(
                        _outcome(
                            user_id,
                            item,
                            "purchase",
                            click_ts + 60.0,
                            request_id,
                            round(float(value[i]), 2),
                        )
                    )
            for _ in range(int(organic[i])):
                item = f"i{int(organic_items[organic_at])}"
                organic_at += 1
                logs.outcomes.append(_outcome(user_id, item, "view", ts + 5.0, None))
    logs.outcomes.sort(key=lambda rec: float(rec["ts"]))
    return logs


def _outcome(
    user_id: str,
    item_id: str,
    event_type: str,
    ts: float,
    request_id: str | None,
    value: float | None = None,
) -> Record:
    rec: Record = {
        "schema": "outcome.v1",
        "user_id": user_id,
        "item_id": item_id,
        "event_type": event_type,
        "ts": ts,
    }
    if request_id is not None:
        rec["request_id"] = request_id
    if value is not None:
        rec["value"] = value
    return rec


def write_jsonl(path: Path | str, records: Iterable[Record]) -> Path:
    """Write records as JSON lines (the ``streamrec export`` format)."""
    out = Path(path)
    with out.open("wb") as fh:
        for rec in records:
            fh.write(orjson.dumps(rec))
            fh.write(b"\n")
    return out
