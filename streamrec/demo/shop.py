"""The synthetic shop `streamrec demo` replays: catalog, users with a planted taste, sessions.

Pure (no I/O): the runner asks the server for an answer, hands it to :meth:`Shop.act`, and
sends the outcome events it returns.

The planted structure, which a co-visitation recommender can learn and popularity cannot:

* ``categories`` categories of ``items / categories`` items each; inside a category the
  items form a fixed browsing *chain* (item j leads on to item j+1, j+2 …) and have a
  Zipf-like popularity.
* Every user has one favourite category. Their next *target* item is, most of the time, the
  next not-yet-seen item of the chain after the last item they looked at; otherwise a
  popular item of the favourite category; rarely an item of another category (noise).
* A session: the user asks for recommendations (surface ``home``); if the target is in the
  answer they click it (the outcome carries the answer's request_id), otherwise they find it
  by browsing (an organic ``view``). Sometimes they also click another item of their
  favourite category from the answer, and sometimes add the target to the cart and buy it.

Quality is measured prequentially on the targets, which are drawn *before* the answer is
seen, so both rankings are judged on the same, independent ground truth: HR@k of the
server's answer, and HR@k of a popularity baseline (the demo's own running counts, the
user's seen items excluded, as the server excludes them).
"""

from __future__ import annotations

import heapq
import random
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.errors import ConfigError
from schemas.events import Context, EventType, Item, Outcome

__all__ = ["Hits", "Shop", "ShopConfig", "Step", "UserView"]

#: weight of each event type in the demo's popularity baseline (as the worker's defaults)
_POP_WEIGHT = {
    EventType.VIEW: 1.0,
    EventType.CLICK: 1.0,
    EventType.ADD_TO_CART: 2.0,
    EventType.PURCHASE: 3.0,
}


@dataclass(frozen=True, slots=True)
class ShopConfig:
    """Size of the shop and the probabilities of the planted behaviour."""

    items: int = 300
    categories: int = 12
    users: int = 300
    seed: int = 7
    k: int = 10  # answer size asked for, and the k of HR@k
    follow_chain: float = 0.7  # next target = next unseen chain item after the last one
    explore: float = 0.08  # target from another category (noise)
    zipf_s: float = 1.1  # popularity skew inside a category
    click_other: float = 0.2  # also click another favourite-category item from the answer
    add_to_cart: float = 0.12
    purchase: float = 0.5  # given add_to_cart
    session_steps: tuple[int, int] = (2, 6)  # targets per session (inclusive range)
    tenant: str = "demo-shop"
    surface: str = "home"
    locale: str = "en-GB"

    def __post_init__(self) -> None:
        if self.categories < 1 or self.items < 2 * self.categories:
            raise ConfigError(
                f"demo shop needs >= 1 category and >= 2 items per category, "
                f"got {self.items} items in {self.categories} categories"
            )
        if self.users < 1 or self.k < 1:
            raise ConfigError("demo shop needs at least one user and k >= 1")
        low, high = self.session_steps
        if not 1 <= low <= high:
            raise ConfigError(f"session_steps must be 1 <= low <= high, got {self.session_steps}")


@dataclass(slots=True)
class _User:
    user_id: str
    favourite: str
    seen: set[str] = field(default_factory=set)
    last_item: str | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    session: int = 0
    steps_left: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """What one session step produced."""

    target: str
    hit: bool  # target in the server's top-k
    popularity_hit: bool  # target in the popularity baseline's top-k
    outcomes: list[Outcome]
    session_over: bool


@dataclass(frozen=True, slots=True)
class UserView:
    """One user as the live view shows them."""

    user_id: str
    favourite: str
    recent: list[str]  # last viewed items, newest first
    answer: list[str]  # current top of the server's answer


@dataclass(slots=True)
class Hits:
    """Prequential hit counts of the server and of the popularity baseline."""

    targets: int = 0
    streamrec: int = 0
    popularity: int = 0

    def add(self, step: Step) -> None:
        self.targets += 1
        self.streamrec += step.hit
        self.popularity += step.popularity_hit

    @property
    def hr_streamrec(self) -> float:
        return self.streamrec / self.targets if self.targets else 0.0

    @property
    def hr_popularity(self) -> float:
        return self.popularity / self.targets if self.targets else 0.0


def _now() -> datetime:
    return datetime.now(UTC)


class Shop:
    """Catalog, users and their behaviour, from one seed."""

    def __init__(self, config: ShopConfig | None = None) -> None:
        self.config = cfg = config or ShopConfig()
        self._rng = random.Random(cfg.seed)
        self.categories = [f"cat{c:02d}" for c in range(cfg.categories)]
        width = len(str(cfg.items - 1))
        self.items = [f"item{i:0{width}d}" for i in range(cfg.items)]
        self.category_of: dict[str, str] = {}
        self.chain: dict[str, list[str]] = {c: [] for c in self.categories}
        shuffled = self.items[:]
        self._rng.shuffle(shuffled)
        for index, item in enumerate(shuffled):
            category = self.categories[index % cfg.categories]
            self.category_of[item] = category
            self.chain[category].append(item)
        self._position = {item: i for c in self.chain.values() for i, item in enumerate(c)}
        # popularity inside a category: a random order of the chain, Zipf weights
        self._popular: dict[str, tuple[list[str], list[float]]] = {}
        for category, chain in self.chain.items():
            order = chain[:]
            self._rng.shuffle(order)
            weights = [1.0 / (rank + 1) ** cfg.zipf_s for rank in range(len(order))]
            self._popular[category] = (order, weights)
        self.price = {item: round(self._rng.uniform(5, 120), 2) for item in self.items}
        uwidth = len(str(cfg.users - 1))
        self.users: dict[str, _User] = {}
        for u in range(cfg.users):
            user_id = f"user{u:0{uwidth}d}"
            self.users[user_id] = _User(user_id, self._rng.choice(self.categories))
        self._counts: defaultdict[str, float] = defaultdict(float)
        self.context = Context(tenant=cfg.tenant, surface=cfg.surface, locale=cfg.locale)

    # --- catalog ----------------------------------------------------------------------------
    def item_events(self) -> list[Item]:
        """The catalog as ``item.v1`` events (one per item)."""
        ts = _now()
        return [
            Item(item_id=item, categories=[self.category_of[item]], tags=["demo"], ts=ts)
            for item in self.items
        ]

    # --- sessions ---------------------------------------------------------------------------
    def start_session(self, user_id: str) -> None:
        user = self.users[user_id]
        user.session += 1
        user.steps_left = self._rng.randint(*self.config.session_steps)

    def in_session(self, user_id: str) -> bool:
        return self.users[user_id].steps_left > 0

    def session_id(self, user_id: str) -> str:
        user = self.users[user_id]
        return f"{user_id}-s{user.session}"

    def view(self, user_id: str, answer: Sequence[str] = ()) -> UserView:
        user = self.users[user_id]
        return UserView(user_id, user.favourite, list(reversed(user.recent)), list(answer))

    # --- behaviour --------------------------------------------------------------------------
    def _popular_in(self, category: str, seen: set[str]) -> str:
        order, weights = self._popular[category]
        choice = order[0]
        for _ in range(6):  # prefer an item the user has not seen yet
            choice = self._rng.choices(order, weights)[0]
            if choice not in seen:
                break
        return choice

    def _next_in_chain(self, user: _User) -> str | None:
        last = user.last_item
        if last is None or self.category_of[last] != user.favourite:
            return None
        chain = self.chain[user.favourite]
        start = self._position[last]
        for step in range(1, len(chain)):
            item = chain[(start + step) % len(chain)]
            if item not in user.seen:
                return item
        return None

    def next_target(self, user_id: str) -> str:
        """The item the user goes for next (drawn before any answer is seen)."""
        cfg, user = self.config, self.users[user_id]
        roll = self._rng.random()
        if roll < cfg.explore:
            return self._popular_in(self._rng.choice(self.categories), user.seen)
        if roll < cfg.explore + cfg.follow_chain:
            following = self._next_in_chain(user)
            if following is not None:
                return following
        return self._popular_in(user.favourite, user.seen)

    def popularity_top(self, user_id: str, k: int | None = None) -> list[str]:
        """Baseline: the k most popular items so far (demo's own counts), unseen by the user."""
        k = k or self.config.k
        seen = self.users[user_id].seen
        top: list[str] = []
        ranked = heapq.nlargest(k + len(seen), self._counts.items(), key=lambda kv: (kv[1], kv[0]))
        for item, _ in ranked:
            if item not in seen:
                top.append(item)
                if len(top) == k:
                    break
        return top

    def act(self, user_id: str, answer: Sequence[str], request_id: str | None) -> Step:
        """One session step: draw the target, judge both rankings on it, produce outcomes.

        ``answer`` is the server's ranked item list for this step (empty when the request
        failed: the user then only browses).
        """
        cfg, user = self.config, self.users[user_id]
        target = self.next_target(user_id)
        top = list(answer[: cfg.k])
        hit = target in top
        popularity_hit = target in self.popularity_top(user_id)
        session_id = self.session_id(user_id)
        outcomes: list[Outcome] = []

        def emit(item: str, kind: EventType, from_answer: bool, value: float | None = None) -> None:
            outcomes.append(
                Outcome(
                    user_id=user_id,
                    item_id=item,
                    event_type=kind,
                    ts=_now(),
                    request_id=request_id if from_answer else None,
                    session_id=session_id,
                    value=value,
                    context=self.context,
                )
            )
            self._counts[item] += _POP_WEIGHT.get(kind, 0.0)

        emit(target, EventType.CLICK if hit else EventType.VIEW, hit)
        others = [
            item for item in top if item != target and self.category_of.get(item) == user.favourite
        ]
        if others and self._rng.random() < cfg.click_other:
            other = self._rng.choice(others)
            emit(other, EventType.CLICK, True)
            self._remember(user, other)
        if self._rng.random() < cfg.add_to_cart:
            emit(target, EventType.ADD_TO_CART, hit, self.price[target])
            if self._rng.random() < cfg.purchase:
                emit(target, EventType.PURCHASE, hit, self.price[target])
        self._remember(user, target)
        user.steps_left = max(0, user.steps_left - 1)
        return Step(target, hit, popularity_hit, outcomes, user.steps_left == 0)

    @staticmethod
    def _remember(user: _User, item: str) -> None:
        user.seen.add(item)
        user.last_item = item
        user.recent.append(item)
