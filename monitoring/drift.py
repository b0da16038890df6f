"""Drift statistics (current window vs reference window) and the drift report. Pure, numpy.

Statistics (each unit-tested against hand-computed values):

* :func:`psi` — population stability index ``Σ (p−q)·ln(p/q)`` (natural log), used for the
  event-type mix. Rule of thumb: < 0.1 stable, 0.1–0.25 moderate, > 0.25 major shift.
* :func:`kl` — Kullback-Leibler divergence ``Σ p·ln(p/q)`` (natural log).
* :func:`js` — Jensen-Shannon divergence in bits, bounded in [0, 1]; used for the item
  popularity distribution over the top-N items plus an "other" bucket
  (:func:`topn_with_other`), so a flood of brand-new items moves mass into "other" or into
  keys the reference never had, both of which JS sees without infinite terms.
* :func:`volume_ratio`, :func:`coldstart_ratio`, :func:`ctr_change` (relative change plus a
  pooled two-proportion z statistic).
* :func:`smoothed_kl` — KL(current‖reference) of two count vectors after adding
  :data:`KL_PSEUDO_COUNT` to every bin, for the plans' KL threshold.

Plan signals (:data:`PLAN_SIGNALS`, the product plans' thresholds, settings ``drift_plan_*``)
sit next to the signals above, on the same windows and sample-size guards, and reuse their
quantities where they are the same:

=====================  ==============  ======================================================
plan signal            scope           value (out of bounds when ≥ its threshold)
=====================  ==============  ======================================================
``event_mix_kl``       outcomes        KL of the event-type mix (smoothed, nats) ≥ 0.1
``items_kl``           outcomes        KL of the top-N item mix + other (smoothed) ≥ 0.1
``ctr_drop``           pair            the ``ctr_rel_drop`` value ≥ 0.15, z ≤ −drift_plan_ctr_z
``volume_change``      topic           abs(volume_ratio − 1) ≥ 0.3 (up or down)
``coldstart_change``   users / items   abs(never-seen share / reference share − 1) ≥ 0.25
=====================  ==============  ======================================================

They raise no alert one by one: :mod:`monitoring.retune` turns them into the re-tune decision
(a sustained ``ctr_drop`` → re-tune now; two or more plan signals out → schedule).

:func:`evaluate_drift` turns a :class:`~monitoring.windows.WindowPair` into a
:class:`DriftReport`: one :class:`DriftSignal` per signal and scope, each with a value, its
threshold, a level and whether it was *evaluable* (enough samples; otherwise the level is OK
and ``reason`` says why).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from core.settings import Settings, setting_attr, settings_values
from monitoring.levels import Direction, Level, level_for
from monitoring.windows import PAIR_SEP, WindowPair

OTHER = "__other__"
"""Key of the "everything else" bucket in :func:`topn_with_other`."""

FloatArray = npt.NDArray[np.float64]

#: Alert kind of each drift signal (``alert.v1`` ``kind``).
SIGNAL_KINDS: dict[str, str] = {
    "volume_ratio": "drift_volume",
    "event_mix_psi": "drift_event_mix",
    "items_js": "drift_items",
    "coldstart_delta": "drift_coldstart",
    "ctr_rel_drop": "drift_ctr",
    "deadletter_rate": "deadletter_rate",
}

#: The plans' signals (no alert kind of their own: they feed :mod:`monitoring.retune`).
PLAN_SIGNALS: tuple[str, ...] = (
    "event_mix_kl",
    "items_kl",
    "ctr_drop",
    "volume_change",
    "coldstart_change",
)

KL_PSEUDO_COUNT = 0.5
"""Added to every bin's count (both windows) before :func:`smoothed_kl`: a category the
reference never saw gets a large but finite term (Jeffreys' prior, as in add-½ smoothing)."""


# --- statistics ---------------------------------------------------------------------------------
def _distribution(values: Sequence[float] | FloatArray, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    total = float(arr.sum())
    if total <= 0:
        raise ValueError(f"{name} must have a positive sum")
    out: FloatArray = arr / total
    return out


def _aligned(
    p: Sequence[float] | FloatArray, q: Sequence[float] | FloatArray
) -> tuple[FloatArray, FloatArray]:
    pa, qa = _distribution(p, "p"), _distribution(q, "q")
    if pa.shape != qa.shape:
        raise ValueError(f"p and q must be aligned, got {pa.size} and {qa.size} bins")
    return pa, qa


def _floor(dist: FloatArray, eps: float) -> FloatArray:
    floored = np.maximum(dist, eps)
    out: FloatArray = floored / floored.sum()
    return out


def psi(
    p: Sequence[float] | FloatArray, q: Sequence[float] | FloatArray, eps: float = 1e-4
) -> float:
    """Population stability index of ``p`` (current) against ``q`` (reference).

    Inputs are normalised; empty bins are floored at ``eps`` (then renormalised) so a
    category that appears or vanishes gives a large but finite contribution.
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    pa, qa = _aligned(p, q)
    pa, qa = _floor(pa, eps), _floor(qa, eps)
    return float(np.sum((pa - qa) * np.log(pa / qa)))


def kl(
    p: Sequence[float] | FloatArray, q: Sequence[float] | FloatArray, eps: float = 1e-12
) -> float:
    """KL(p‖q) in nats; bins where ``p`` is 0 contribute 0, ``q`` is floored at ``eps``."""
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    pa, qa = _aligned(p, q)
    qa = _floor(qa, eps)
    mask = pa > 0
    return float(np.sum(pa[mask] * np.log(pa[mask] / qa[mask])))


def smoothed_kl(
    current: Sequence[float] | FloatArray,
    reference: Sequence[float] | FloatArray,
    pseudo: float = KL_PSEUDO_COUNT,
) -> float:
    """KL(current‖reference) in nats of two aligned *count* vectors, ``pseudo`` added per bin.

    ``(c_i + a) / (C + k·a)`` against ``(r_i + a) / (R + k·a)`` over the ``k`` bins.
    """
    if pseudo <= 0:
        raise ValueError(f"pseudo must be > 0, got {pseudo}")
    cur = np.asarray(current, dtype=np.float64) + pseudo
    ref = np.asarray(reference, dtype=np.float64) + pseudo
    return kl(cur, ref)


def js(p: Sequence[float] | FloatArray, q: Sequence[float] | FloatArray) -> float:
    """Jensen-Shannon divergence in bits (base 2), in [0, 1]; needs no smoothing."""
    pa, qa = _aligned(p, q)
    m = (pa + qa) / 2

    def half(a: FloatArray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return min(1.0, max(0.0, (half(pa) + half(qa)) / 2))


@dataclass(frozen=True, slots=True)
class TopN:
    """Two count tables projected on the same keys (top-N of each, then :data:`OTHER`)."""

    keys: tuple[str, ...]
    current: FloatArray
    reference: FloatArray


def topn_with_other(
    current: Mapping[str, int | float],
    reference: Mapping[str, int | float],
    n: int,
    *,
    current_total: float | None = None,
    reference_total: float | None = None,
) -> TopN:
    """Project two count tables on the union of each one's top ``n`` keys plus :data:`OTHER`.

    ``*_total`` is the true total (defaults to the table's sum); the difference between it and
    the kept keys goes to :data:`OTHER` — that is where trimmed or long-tail mass lives.
    Ties are broken by key so the result is deterministic.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")

    def top(counts: Mapping[str, int | float]) -> list[str]:
        if len(counts) <= n:
            return list(counts)
        values = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        kth = float(np.partition(values, values.size - n)[values.size - n])  # n-th largest
        above = [k for k, v in counts.items() if v > kth]
        ties = sorted(k for k, v in counts.items() if v == kth)
        return above + ties[: n - len(above)]

    keys = sorted(set(top(current)) | set(top(reference)))

    def project(counts: Mapping[str, int | float], total: float | None) -> FloatArray:
        kept = np.array([float(counts.get(k, 0)) for k in keys], dtype=np.float64)
        whole = float(sum(counts.values())) if total is None else float(total)
        other = whole - float(kept.sum())
        if other < -1e-9 * max(1.0, whole):
            raise ValueError(f"total {whole} is smaller than the counted keys {kept.sum()}")
        return np.append(kept, max(0.0, other))

    return TopN(
        keys=(*keys, OTHER),
        current=project(current, current_total),
        reference=project(reference, reference_total),
    )


def volume_ratio(
    current_count: float, current_s: float, reference_count: float, reference_s: float
) -> float:
    """Event rate of the current window divided by the rate of the reference window."""
    if current_s <= 0 or reference_s <= 0:
        raise ValueError("window lengths must be > 0")
    if current_count < 0 or reference_count <= 0:
        raise ValueError("reference_count must be > 0 and current_count >= 0")
    return (current_count / current_s) / (reference_count / reference_s)


def coldstart_ratio(new: int, total: int) -> float:
    """Share of events whose user (or item) was never seen before."""
    if total <= 0 or new < 0 or new > total:
        raise ValueError(f"need 0 <= new <= total and total > 0, got new={new} total={total}")
    return new / total


@dataclass(frozen=True, slots=True)
class CtrChange:
    """CTR of both windows, the relative change and the pooled two-proportion z."""

    current: float
    reference: float
    relative_change: float
    """(current − reference) / reference; −0.5 means the CTR halved."""
    z: float
    """Pooled two-proportion z of current − reference (negative for a drop)."""


def ctr_change(clicks: int, impressions: int, ref_clicks: int, ref_impressions: int) -> CtrChange:
    """Compare the click-through rate of two windows."""
    if impressions <= 0 or ref_impressions <= 0:
        raise ValueError("impressions must be > 0 in both windows")
    if not (0 <= clicks <= impressions and 0 < ref_clicks <= ref_impressions):
        raise ValueError("need 0 <= clicks <= impressions and 0 < ref_clicks <= ref_impressions")
    cur, ref = clicks / impressions, ref_clicks / ref_impressions
    pooled = (clicks + ref_clicks) / (impressions + ref_impressions)
    se = math.sqrt(pooled * (1 - pooled) * (1 / impressions + 1 / ref_impressions))
    z = (cur - ref) / se if se > 0 else 0.0
    return CtrChange(current=cur, reference=ref, relative_change=(cur - ref) / ref, z=z)


# --- report -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DriftThresholds:
    """Thresholds and guards of the drift signals: the drift_* and deadletter_rate_* settings."""

    volume_ratio: float = setting_attr("drift_volume_ratio")
    mix_psi: float = setting_attr("drift_mix_psi")
    items_js: float = setting_attr("drift_items_js")
    top_items: int = setting_attr("drift_top_items")
    coldstart_delta: float = setting_attr("drift_coldstart_delta")
    ctr_rel_drop: float = setting_attr("drift_ctr_rel_drop")
    ctr_z: float = setting_attr("drift_ctr_z")
    ctr_min_impressions: int = setting_attr("drift_ctr_min_impressions")
    ctr_min_reference_clicks: int = 30  # not a setting
    deadletter_warn: float = setting_attr("deadletter_rate_warn")
    deadletter_crit: float = setting_attr("deadletter_rate_crit")
    min_events: int = setting_attr("drift_min_events")
    plan_kl: float = setting_attr("drift_plan_kl")
    plan_ctr_drop: float = setting_attr("drift_plan_ctr_drop")
    plan_ctr_z: float = setting_attr("drift_plan_ctr_z")
    plan_volume_change: float = setting_attr("drift_plan_volume_change")
    plan_coldstart_change: float = setting_attr("drift_plan_coldstart_change")

    def __post_init__(self) -> None:
        if self.volume_ratio <= 1:
            raise ValueError("volume_ratio must be > 1")
        if self.deadletter_crit <= self.deadletter_warn:
            raise ValueError("deadletter_crit must be > deadletter_warn")
        if min(self.mix_psi, self.items_js, self.coldstart_delta, self.ctr_rel_drop) <= 0:
            raise ValueError("drift thresholds must be > 0")
        plan = (self.plan_kl, self.plan_ctr_drop, self.plan_volume_change)
        if min(*plan, self.plan_coldstart_change, self.plan_ctr_z) <= 0:
            raise ValueError("plan thresholds must be > 0")
        if self.plan_ctr_drop >= 1:
            raise ValueError("plan_ctr_drop must be < 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> DriftThresholds:
        return cls(**settings_values(cls, settings))


@dataclass(frozen=True, slots=True)
class DriftSignal:
    """One drift statistic for one scope."""

    signal: str
    scope: str
    value: float
    threshold: float
    level: Level
    evaluable: bool
    direction: Direction = "above"
    crit_threshold: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    cause: str = ""
    """Human-readable explanation of the value (or why it could not be evaluated)."""
    significant: bool = True
    """False when a significance guard (CTR z) holds the level at OK despite the value."""
    stats: Mapping[str, float] = field(default_factory=dict)
    """The inputs behind the value, when a consumer needs them (CTR: ``ctr``,
    ``reference_ctr``, ``z``)."""

    @property
    def kind(self) -> str:
        return SIGNAL_KINDS[self.signal]

    @property
    def plan(self) -> bool:
        """One of the plans' signals (:data:`PLAN_SIGNALS`: no alert kind of its own)."""
        return self.signal in PLAN_SIGNALS

    @property
    def out(self) -> bool:
        """Past its threshold with every guard passed (level WARN or worse)."""
        return self.guards_passed and self.level >= Level.WARN

    @property
    def guards_passed(self) -> bool:
        """Evaluable and significant: past the threshold now means WARN or worse."""
        return self.evaluable and self.significant


@dataclass(frozen=True, slots=True)
class DriftReport:
    """All drift signals at one evaluation."""

    now: float
    window_s: float
    reference_s: float
    signals: tuple[DriftSignal, ...]

    def get(self, signal: str, scope: str) -> DriftSignal | None:
        for s in self.signals:
            if s.signal == signal and s.scope == scope:
                return s
        return None

    def of(self, signal: str) -> list[DriftSignal]:
        return [s for s in self.signals if s.signal == signal]

    @property
    def plan_out(self) -> list[DriftSignal]:
        """Plan signals out of bounds now."""
        return [s for s in self.signals if s.plan and s.out]

    @property
    def level(self) -> Level:
        return max((s.level for s in self.signals), default=Level.OK)


def _not_evaluable(
    signal: str,
    scope: str,
    threshold: float,
    reason: str,
    labels: Mapping[str, str],
    value: float = math.nan,
    direction: Direction = "above",
    crit: float | None = None,
) -> DriftSignal:
    return DriftSignal(
        signal,
        scope,
        value,
        threshold,
        Level.OK,
        False,
        direction,
        crit,
        dict(labels),
        f"insufficient data: {reason}",
    )


def _plan(
    signal: str, scope: str, value: float, threshold: float, labels: Mapping[str, str], cause: str
) -> DriftSignal:
    """An evaluable plan signal: out of bounds when ``value >= threshold``."""
    return DriftSignal(
        signal,
        scope,
        value,
        threshold,
        level_for(value, threshold),
        True,
        "above",
        None,
        dict(labels),
        cause,
    )


def _volume(pair: WindowPair, th: DriftThresholds) -> list[DriftSignal]:
    out: list[DriftSignal] = []
    topics = sorted(set(pair.current.topics) | set(pair.reference.topics))
    for topic in topics:
        labels = {"topic": topic}
        cur, ref = pair.current.topics.get(topic, 0), pair.reference.topics.get(topic, 0)
        window_s = pair.current_end - pair.current_start
        reason = ""
        if ref < th.min_events:
            reason = f"{ref} reference events < {th.min_events}"
        elif pair.current_s < window_s or pair.reference_s < window_s:
            reason = (
                f"monitor running for less than two windows ({pair.reference_s:.0f} s reference)"
            )
        if reason:
            out.append(_not_evaluable("volume_ratio", topic, th.volume_ratio, reason, labels))
            out.append(
                _not_evaluable("volume_change", topic, th.plan_volume_change, reason, labels)
            )
            continue
        ratio = volume_ratio(cur, pair.current_s, ref, pair.reference_s)
        direction: Direction = "above" if ratio >= 1 else "below"
        threshold = th.volume_ratio if ratio >= 1 else 1 / th.volume_ratio
        rates = f"{cur / pair.current_s:.2f}/s vs {ref / pair.reference_s:.2f}/s"
        cause = f"{topic} volume ×{ratio:.2f} vs reference ({rates})"
        out.append(
            DriftSignal(
                "volume_ratio",
                topic,
                ratio,
                threshold,
                level_for(ratio, threshold, None, direction),
                True,
                direction,
                None,
                labels,
                cause,
            )
        )
        change = ratio - 1
        out.append(
            _plan(
                "volume_change",
                topic,
                abs(change),
                th.plan_volume_change,
                labels,
                f"{topic} volume {change:+.0%} vs reference ({rates})",
            )
        )
    return out


def _mix(pair: WindowPair, th: DriftThresholds) -> list[DriftSignal]:
    cur, ref = pair.current.types, pair.reference.types
    labels = {"topic": "outcomes"}
    n_cur, n_ref = sum(cur.values()), sum(ref.values())
    if min(n_cur, n_ref) < th.min_events:
        reason = f"{n_cur} current / {n_ref} reference outcomes < {th.min_events}"
        return [
            _not_evaluable("event_mix_psi", "outcomes", th.mix_psi, reason, labels),
            _not_evaluable("event_mix_kl", "outcomes", th.plan_kl, reason, labels),
        ]
    keys = sorted(set(cur) | set(ref))
    c = np.array([cur.get(k, 0) for k in keys], dtype=np.float64)
    r = np.array([ref.get(k, 0) for k in keys], dtype=np.float64)
    p, q = c / n_cur, r / n_ref
    value = psi(p, q)
    worst = int(np.argmax(np.abs(p - q)))
    change = f"largest change {keys[worst]} {p[worst]:.1%} vs {q[worst]:.1%}"
    divergence = smoothed_kl(c, r)
    return [
        DriftSignal(
            "event_mix_psi",
            "outcomes",
            value,
            th.mix_psi,
            level_for(value, th.mix_psi),
            True,
            "above",
            None,
            labels,
            f"event mix PSI {value:.3f}; {change}",
        ),
        _plan(
            "event_mix_kl",
            "outcomes",
            divergence,
            th.plan_kl,
            labels,
            f"event mix KL {divergence:.3f} nats; {change}",
        ),
    ]


def _items(pair: WindowPair, th: DriftThresholds) -> list[DriftSignal]:
    cur, ref = pair.current, pair.reference
    labels = {"topic": "outcomes"}
    if min(cur.item_events, ref.item_events) < th.min_events:
        reason = (
            f"{cur.item_events} current / {ref.item_events} reference item events < {th.min_events}"
        )
        return [
            _not_evaluable("items_js", "outcomes", th.items_js, reason, labels),
            _not_evaluable("items_kl", "outcomes", th.plan_kl, reason, labels),
        ]
    top = topn_with_other(
        cur.items,
        ref.items,
        th.top_items,
        current_total=cur.item_events,
        reference_total=ref.item_events,
    )
    p = top.current / top.current.sum()
    q = top.reference / top.reference.sum()
    value = js(p, q)
    gain = p - q
    risers = [top.keys[i] for i in np.argsort(-gain, kind="stable")[:3] if gain[i] > 0]
    moved = f"gaining: {', '.join(risers) or '-'}; other {p[-1]:.0%} vs {q[-1]:.0%}"
    divergence = smoothed_kl(top.current, top.reference)
    return [
        DriftSignal(
            "items_js",
            "outcomes",
            value,
            th.items_js,
            level_for(value, th.items_js),
            True,
            "above",
            None,
            labels,
            f"top-{th.top_items} item distribution JS {value:.3f} bits; {moved}",
        ),
        _plan(
            "items_kl",
            "outcomes",
            divergence,
            th.plan_kl,
            labels,
            f"top-{th.top_items} item mix KL {divergence:.3f} nats; {moved}",
        ),
    ]


def _coldstart(pair: WindowPair, th: DriftThresholds) -> list[DriftSignal]:
    out: list[DriftSignal] = []
    c, r = pair.current, pair.reference
    # the never-seen share falls by itself while a fresh seen-set fills up: a fall counts once
    # the monitor had run one reference length before the reference window began
    warm = pair.reference_start - pair.started_at >= pair.current_start - pair.reference_start
    for entity, cur_new, cur_n, ref_new, ref_n in (
        ("users", c.new_users, c.user_events, r.new_users, r.user_events),
        ("items", c.new_items, c.item_events, r.new_items, r.item_events),
    ):
        labels = {"entity": entity}
        if min(cur_n, ref_n) < th.min_events:
            reason = f"{cur_n} current / {ref_n} reference events < {th.min_events}"
            out.append(
                _not_evaluable("coldstart_delta", entity, th.coldstart_delta, reason, labels)
            )
            out.append(
                _not_evaluable("coldstart_change", entity, th.plan_coldstart_change, reason, labels)
            )
            continue
        cur, ref = coldstart_ratio(cur_new, cur_n), coldstart_ratio(ref_new, ref_n)
        delta = cur - ref
        cause = f"never-seen {entity} {cur:.1%} of events vs {ref:.1%} in the reference"
        out.append(
            DriftSignal(
                "coldstart_delta",
                entity,
                delta,
                th.coldstart_delta,
                level_for(delta, th.coldstart_delta),
                True,
                "above",
                None,
                labels,
                cause,
            )
        )
        if ref_new == 0:
            out.append(
                _not_evaluable(
                    "coldstart_change",
                    entity,
                    th.plan_coldstart_change,
                    f"no never-seen {entity} in the reference (relative change undefined)",
                    labels,
                )
            )
        elif cur < ref and not warm:
            out.append(
                _not_evaluable(
                    "coldstart_change",
                    entity,
                    th.plan_coldstart_change,
                    f"never-seen {entity} share fell while the seen-set warms up",
                    labels,
                )
            )
        else:
            change = cur / ref - 1
            out.append(
                _plan(
                    "coldstart_change",
                    entity,
                    abs(change),
                    th.plan_coldstart_change,
                    labels,
                    f"never-seen {entity} share {change:+.0%}: {cur:.1%} of events vs "
                    f"{ref:.1%} in the reference",
                )
            )
    return out


def _ctr(pair: WindowPair, th: DriftThresholds) -> list[DriftSignal]:
    out: list[DriftSignal] = []
    c, r = pair.current, pair.reference
    for key in sorted(set(c.impressions) | set(r.impressions)):
        surface, _, variant = key.partition(PAIR_SEP)
        labels = {"surface": surface, "variant": variant}
        imp, ref_imp = c.impressions.get(key, 0), r.impressions.get(key, 0)
        clicks, ref_clicks = c.clicks.get(key, 0), r.clicks.get(key, 0)
        reason = ""
        if min(imp, ref_imp) < th.ctr_min_impressions:
            reason = f"{imp} current / {ref_imp} reference impressions < {th.ctr_min_impressions}"
        elif ref_clicks < th.ctr_min_reference_clicks:
            reason = f"{ref_clicks} reference clicks < {th.ctr_min_reference_clicks}"
        if reason:
            out.append(_not_evaluable("ctr_rel_drop", key, th.ctr_rel_drop, reason, labels))
            plan = _not_evaluable("ctr_drop", key, th.plan_ctr_drop, reason, labels)
            if imp >= th.ctr_min_impressions:
                # the current CTR alone still tells whether a started drop goes on
                # (monitoring.retune compares it with the CTR before the drop)
                plan = replace(plan, stats={"ctr": min(clicks, imp) / imp})
            out.append(plan)
            continue
        # more clicks than impressions can only come from join skew at a window edge
        change = ctr_change(min(clicks, imp), imp, min(ref_clicks, ref_imp), ref_imp)
        drop = -change.relative_change
        cause = (
            f"CTR {surface}/{variant} {change.current:.2%} vs {change.reference:.2%} "
            f"({change.relative_change:+.0%}, z={change.z:.1f}, {imp} impressions)"
        )
        # the same drop against the two thresholds, each with its significance guard
        for signal, threshold, z in (
            ("ctr_rel_drop", th.ctr_rel_drop, th.ctr_z),
            ("ctr_drop", th.plan_ctr_drop, th.plan_ctr_z),
        ):
            significant = change.z <= -z
            out.append(
                DriftSignal(
                    signal,
                    key,
                    drop,
                    threshold,
                    level_for(drop, threshold) if significant else Level.OK,
                    True,
                    "above",
                    None,
                    labels,
                    cause,
                    significant,
                    {"ctr": change.current, "reference_ctr": change.reference, "z": change.z},
                )
            )
    return out


def _deadletter(pair: WindowPair, th: DriftThresholds) -> DriftSignal:
    dead = pair.current.deadletter_total
    total = dead + pair.current.valid_total
    if total < th.min_events:
        return _not_evaluable(
            "deadletter_rate",
            "all",
            th.deadletter_warn,
            f"{total} messages < {th.min_events}",
            {},
            crit=th.deadletter_crit,
        )
    rate = dead / total
    reasons = sorted(pair.current.deadletters.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    top = ", ".join(f"{reason} {count}" for reason, count in reasons) or "-"
    cause = f"{rate:.2%} of {total} messages dead-lettered (top reasons: {top})"
    return DriftSignal(
        "deadletter_rate",
        "all",
        rate,
        th.deadletter_warn,
        level_for(rate, th.deadletter_warn, th.deadletter_crit),
        True,
        "above",
        th.deadletter_crit,
        {},
        cause,
    )


def evaluate_drift(pair: WindowPair, thresholds: DriftThresholds) -> DriftReport:
    """Compute every drift signal for the windows in ``pair``."""
    signals: list[DriftSignal] = [
        *_volume(pair, thresholds),
        *_mix(pair, thresholds),
        *_items(pair, thresholds),
        *_coldstart(pair, thresholds),
        *_ctr(pair, thresholds),
        _deadletter(pair, thresholds),
    ]
    return DriftReport(
        now=pair.now,
        window_s=pair.current_end - pair.current_start,
        reference_s=pair.current_start - pair.reference_start,
        signals=tuple(signals),
    )
