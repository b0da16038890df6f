"""Session neighbours (V-SKNN-like): score items by what similar users (sessions) did. Pure.

The worker keeps, for each item ``a``, the newest users (in session logs: sessions) that
touched it, ``sn(a)`` (``P:sn:{item}``, see schemas/keyspace.py), and each user's recent items
(``P:u:{user}:r``). At request time, with the request's anchors ``a_0 … a_{L-1}`` newest
first (the ranker's anchors):

* candidates: the users in ``sn(a_p)`` for every anchor, except the requesting user;
* similarity (V-SKNN's position-weighted dot product, ``weighting="div"``):
  ``sim(u, v) = Σ_p [v ∈ sn(a_p)] · w_p / L`` with ``w_p = (L - p) / L`` (the newest anchor
  weighs 1, the oldest 1/L); the ``n`` most similar are kept (ties: the neighbour found
  earliest in the newest anchor's list, i.e. the more recent, then the id);
* ``step(v)``: 1 + the position of the newest anchor ``v`` shares with the request;
* item score: ``s(i) = Σ_v sim(u, v) / step(v) · [i ∈ items(v)]`` (V-SKNN's ``div`` score
  weighting), normalised so the best item scores 1.

The ranker blends these scores with the co-visitation scores (``RankerConfig.session_blend``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

REASON = "similar sessions viewed it"


class Neighbour(NamedTuple):
    """A similar user (session): its similarity and the step of its newest shared anchor."""

    user_id: str
    similarity: float
    step: int


def nearest(
    anchors: Sequence[str],
    index: Mapping[str, Sequence[str]],
    *,
    exclude: str | None,
    n: int,
) -> list[Neighbour]:
    """The ``n`` most similar users to a request with ``anchors`` (newest first).

    ``index[a]`` lists the users of ``sn(a)``, newest first (a missing anchor has none).
    """
    count = len(anchors)
    if count == 0 or n < 1:
        return []
    sims: dict[str, float] = {}
    first: dict[str, tuple[int, int]] = {}  # user → (step, rank in that anchor's list)
    get = sims.get
    for position, anchor in enumerate(anchors):
        users = index.get(anchor)
        if not users:
            continue
        weight = (count - position) / count / count
        for rank, user in enumerate(users):
            if user == exclude:
                continue
            known = get(user)
            if known is None:
                sims[user] = weight
                first[user] = (position + 1, rank)
            else:
                sims[user] = known + weight
    if not sims:
        return []
    order = sorted(sims, key=lambda user: (-sims[user], first[user], user))[:n]
    return [Neighbour(user, sims[user], first[user][0]) for user in order]


def item_scores(
    neighbours: Sequence[Neighbour], items: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """``s(i) = Σ_v sim(v) / step(v) · [i ∈ items(v)]``, divided by its maximum (best = 1).

    ``items[v]`` is neighbour ``v``'s recent items (repeats count once).
    """
    scores: dict[str, float] = {}
    get = scores.get
    for user, similarity, step in neighbours:
        own = items.get(user)
        if not own:
            continue
        value = similarity / step
        for item in set(own):
            scores[item] = get(item, 0.0) + value
    top = max(scores.values(), default=0.0)
    if top <= 0.0:
        return {}
    return {item: score / top for item, score in scores.items()}
