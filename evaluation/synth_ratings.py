"""Synthetic MovieLens-format ratings (``u.data``) with a planted taste structure.

No MovieLens file ships offline, so tests and docs replay this stand-in, shaped like
MovieLens 100k by default (943 users, 1,682 items, ~100k ratings over seven months of 1997–98):

* items belong to one of ``genres`` genres; within a genre their appeal follows a Zipf law,
  and a few blockbusters are popular with everyone;
* each user has one or two favourite genres (a Dirichlet taste vector, concentrated) and an
  activity drawn from a heavy-tailed law (20 to several hundred ratings, as in MovieLens);
* items of a genre come in small series (``series_size``: sequels, one director's films);
* a user rates in a few sittings spread over the period, seconds to minutes apart within a
  sitting; with probability ``binge`` the next rating stays in the series of the previous one
  (an unseen item of it, by appeal), else it picks a genre from the user's taste
  (``explore`` of the time: any item by global appeal), then an unseen item of that genre by
  appeal; the rating (1–5) is higher for favourite genres.

So co-visitation has something real to find (items of a genre, and above all of a series, are
rated by the same users, close in time) and global popularity only knows the blockbusters.
Same seed, same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

START_TS = 874_724_710  # 1997-09-20, the first MovieLens 100k timestamp
SPAN_S = 18_561_928  # to 1998-04-22


@dataclass(frozen=True, slots=True)
class RatingsSpec:
    """Shape of the synthetic ratings log."""

    users: int = 943
    items: int = 1682
    genres: int = 18
    mean_ratings: float = 106.0
    min_ratings: int = 20
    explore: float = 0.15
    blockbusters: int = 30
    series_size: int = 8
    binge: float = 0.25
    seed: int = 7


def _catalog(
    rng: np.random.Generator, spec: RatingsSpec
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Genre, series and appeal of every item."""
    genre = rng.integers(0, spec.genres, size=spec.items)
    series = np.empty(spec.items, dtype=np.int64)
    appeal = np.empty(spec.items)
    next_series = 0
    for g in range(spec.genres):
        members = rng.permutation(np.flatnonzero(genre == g))
        appeal[members] = 1.0 / (np.arange(len(members)) + 1.0)
        for start in range(0, len(members), spec.series_size):
            series[members[start : start + spec.series_size]] = next_series
            next_series += 1
    stars = rng.choice(spec.items, size=min(spec.blockbusters, spec.items), replace=False)
    appeal[stars] *= 8.0
    return genre, series, appeal


def _draw(cumulative: NDArray[np.float64], rng: np.random.Generator) -> int:
    """Index drawn from a normalised cumulative distribution."""
    index = int(np.searchsorted(cumulative, rng.random()))
    return min(index, len(cumulative) - 1)


def synthetic_ratings(spec: RatingsSpec | None = None) -> list[tuple[int, int, int, int]]:
    """``(user, item, rating, timestamp)`` rows (1-based ids), in time order."""
    spec = spec or RatingsSpec()
    rng = np.random.default_rng(spec.seed)
    genre, series, appeal = _catalog(rng, spec)
    by_genre = [np.flatnonzero(genre == g) for g in range(spec.genres)]
    by_series = [np.flatnonzero(series == s) for s in range(int(series.max()) + 1)]
    genre_cum = [np.cumsum(appeal[m]) / appeal[m].sum() for m in by_genre]
    global_cum = np.cumsum(appeal) / appeal.sum()
    rows: list[tuple[int, int, int, int]] = []
    sigma = 0.9
    mu = np.log(max(spec.mean_ratings - spec.min_ratings, 1.0)) - sigma**2 / 2
    for user in range(1, spec.users + 1):
        taste = rng.dirichlet(np.full(spec.genres, 0.08))
        favourites = set(np.argsort(taste)[-2:].tolist())
        count = min(spec.items // 2, spec.min_ratings + int(rng.lognormal(mu, sigma)))
        seen: set[int] = set()
        ts = START_TS + int(rng.uniform(0, SPAN_S * 0.8))
        sitting_left = int(rng.integers(5, 60))
        taste_cum = np.cumsum(taste)
        attempts = 0
        previous = -1
        while len(seen) < count and attempts < 20 * count:
            attempts += 1
            fresh = (
                [int(i) for i in by_series[series[previous]] if int(i) not in seen]
                if previous >= 0 and rng.random() < spec.binge
                else []
            )
            if fresh:
                weights = appeal[fresh]
                item = fresh[_draw(np.cumsum(weights) / weights.sum(), rng)]
            elif rng.random() < spec.explore:
                item = _draw(global_cum, rng)
            else:
                g = _draw(taste_cum, rng)
                members = by_genre[g]
                if len(members) == 0:
                    continue
                item = int(members[_draw(genre_cum[g], rng)])
            if item in seen:
                continue
            seen.add(item)
            previous = item
            liked = int(genre[item]) in favourites
            rating = int(np.clip(round(rng.normal(4.0 if liked else 2.8, 0.9)), 1, 5))
            rows.append((user, item + 1, rating, ts))
            sitting_left -= 1
            if sitting_left <= 0:
                ts += int(rng.exponential(7 * 86_400))
                sitting_left = int(rng.integers(5, 60))
            else:
                ts += int(rng.exponential(40.0)) + 1
    rows.sort(key=lambda r: (r[3], r[0]))
    return rows


def write_udata(path: Path, spec: RatingsSpec | None = None) -> int:
    """Write a tab-separated ``u.data`` (user, item, rating, timestamp); return its rows."""
    rows = synthetic_ratings(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for user, item, rating, ts in rows:
            out.write(f"{user}\t{item}\t{rating}\t{ts}\n")
    return len(rows)
