"""Tune the co-visitation, session-neighbour and ranker settings on a log's own held-out end.

``streamrec eval tune`` (a thin CLI adapter) runs :func:`tune`: an Optuna study (TPE sampler,
seeded) whose every trial is one prequential replay (:func:`evaluation.prequential.
run_prequential`) of PATH's holdout split (``--holdout-days D``: the last D days replayed as
the test log, :mod:`evaluation.holdout`) — never a real test log. A trial may predict for a
seeded sample of the users only (``PrequentialSpec.sample``; every event is still learned), and
its figure comes with the sample's bootstrap interval. The study lives in a SQLite file, so a
rerun with the same storage adds its trials to those already there (resumable; an interrupted
run loses only the trial in flight).

A new study's first trials are the effective settings and each profile's
(``STREAMREC_PROFILE``, :mod:`core.profiles`) on top of them: known starting points before the
sampler explores. The final step replays the holdout split twice on *all* predictions — the
best trial's settings and the effective settings (declared defaults, profile, config file,
environment) — writes both runs' per-prediction files, and compares them paired
(:mod:`evaluation.compare`).
:func:`write_config` writes the best settings that differ from the effective ones as a TOML
config file (``STREAMREC_CONFIG_FILE``, :mod:`core.config_file`).

Pure orchestration: no argument parsing, no printing (progress goes to a callback).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import annotated_types
import optuna
import orjson

from core.config_file import layered_values
from core.errors import ConfigError
from core.profiles import NO_DECAY_S, PROFILES
from core.settings import Settings, load_settings
from evaluation.compare import Comparison, compare_runs
from evaluation.predictions import write_predictions
from evaluation.prequential import PrequentialResult, run_prequential
from evaluation.protocol import LEVEL, RESAMPLES, PrequentialSpec

__all__ = [
    "METRICS",
    "SPACE",
    "Param",
    "TrialReport",
    "TuneResult",
    "TuneSpec",
    "render_toml",
    "sample_space",
    "suggest",
    "tune",
    "write_config",
]

#: what the study maximises: streamrec's mean of one per-prediction metric
METRICS = ("hr", "mrr", "ndcg")


@dataclass(frozen=True, slots=True)
class Param:
    """One tuned setting: its range (inside the setting's declared bounds) or its choices."""

    name: str
    low: float = 0.0
    high: float = 0.0
    #: integer setting
    integer: bool = False
    #: sampled on a log scale (time constants, counts spanning decades)
    log: bool = False
    choices: tuple[str, ...] = ()


#: The search space. Time constants on log scales up to "no decay" (the ratings profile's
#: ~100 years); counts of neighbours/anchors on log scales; ranges kept inside each setting's
#: declared bounds (a unit test checks them against core/settings.py).
SPACE: tuple[Param, ...] = (
    # co-visitation (the worker's processor)
    Param("covis_window", 2, 50, integer=True, log=True),
    Param("covis_session_gap_s", 300.0, NO_DECAY_S, log=True),
    Param("covis_distance_decay", 0.3, 1.0),
    Param("covis_backward_weight", 0.0, 1.0),
    Param("covis_half_life_s", 3600.0, NO_DECAY_S, log=True),
    Param("covis_self_weight", 0.0, 4.0),
    # ranker (the server)
    Param("ranker_max_anchors", 1, 50, integer=True, log=True),
    Param("ranker_anchor_position_decay", 0.3, 1.0),
    Param("ranker_anchor_decay_s", 600.0, NO_DECAY_S, log=True),
    Param("ranker_normalisation", choices=("row", "none")),
    Param("ranker_popularity_exponent", 0.0, 1.0),
    Param("ranker_neighbours_per_anchor", 10, 100, integer=True, log=True),
    # session neighbours (worker index + ranker blend)
    Param("ranker_session_blend", 0.0, 1.0),
    Param("ranker_session_neighbours", 5, 200, integer=True, log=True),
    Param("ranker_session_sample", 10, 500, integer=True, log=True),
    Param("ranker_session_items", 5, 100, integer=True, log=True),
    Param("session_index_sessions_per_item", 20, 1000, integer=True, log=True),
)

#: significant digits of a tuned float, written to the config file and replayed as written
#: (5: round defaults such as 14 days = 1209600 s stay exact)
_DIGITS = 5


def _round(param: Param, value: Any) -> Any:
    """A suggested value as it is written and replayed: floats to 5 significant digits."""
    if param.choices or param.integer:
        return value
    number = float(value)
    if number == 0:
        return 0.0
    digits = _DIGITS - 1 - math.floor(math.log10(abs(number)))
    return min(max(round(number, digits), param.low), param.high)


def suggest(trial: optuna.trial.BaseTrial, space: Sequence[Param] = SPACE) -> dict[str, Any]:
    """The settings of one trial (rounded as :func:`_round`)."""
    values: dict[str, Any] = {}
    for param in space:
        if param.choices:
            value: Any = trial.suggest_categorical(param.name, list(param.choices))
        elif param.integer:
            value = trial.suggest_int(param.name, int(param.low), int(param.high), log=param.log)
        else:
            value = trial.suggest_float(param.name, param.low, param.high, log=param.log)
        values[param.name] = _round(param, value)
    return values


def _sampler(seed: int) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=seed)


def sample_space(seed: int, n: int, space: Sequence[Param] = SPACE) -> list[dict[str, Any]]:
    """``n`` settings the seeded sampler proposes first, without running anything (tests)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=_sampler(seed))
    found = []
    for _ in range(n):
        trial = study.ask()
        found.append(suggest(trial, space))
        study.tell(trial, 0.0)
    return found


def declared_bounds(name: str) -> tuple[float, float, bool, bool]:
    """(low, high, low inclusive, high inclusive) of ``Settings.<name>`` (±inf: unbounded)."""
    low, high, low_in, high_in = -math.inf, math.inf, True, True
    for rule in Settings.model_fields[name].metadata:
        if isinstance(rule, annotated_types.Ge):
            low, low_in = float(rule.ge), True  # type: ignore[arg-type]
        elif isinstance(rule, annotated_types.Gt):
            low, low_in = float(rule.gt), False  # type: ignore[arg-type]
        elif isinstance(rule, annotated_types.Le):
            high, high_in = float(rule.le), True  # type: ignore[arg-type]
        elif isinstance(rule, annotated_types.Lt):
            high, high_in = float(rule.lt), False  # type: ignore[arg-type]
    return low, high, low_in, high_in


# --- the study --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TuneSpec:
    """What to tune on and how."""

    #: the prequential replay of every trial (its ``holdout_days`` is required)
    replay: PrequentialSpec
    trials: int = 30
    metric: str = "hr"
    #: sampler seed (also the seed of the user sample and of the bootstrap)
    seed: int = 0
    #: SQLite file of the study
    storage: Path = Path("tune.db")
    #: where the final runs' JSON and per-prediction files go (``<stem>.best.json`` …)
    output: Path = Path("tune.toml")
    space: tuple[Param, ...] = SPACE

    def check(self) -> None:
        """Raise :class:`ConfigError` on arguments that make no sense (before any replay)."""
        if self.replay.holdout_days is None or self.replay.test is not None:
            raise ConfigError("eval tune needs --holdout-days D (it never tunes on a test log)")
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.metric not in METRICS:
            raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, got {self.metric}")
        self.replay.resolved_protocol()

    @property
    def study_name(self) -> str:
        """One study per log, cut, k, metric and sample: another question starts afresh."""
        r = self.replay
        sample = "all" if r.sample is None else f"{r.sample:g}"
        return (
            f"{r.path.resolve()}|{r.fmt.value}|holdout={r.holdout_days:g}|k={r.k}|"
            f"metric={self.metric}|sample={sample}|seed={self.seed}"
        )


@dataclass(frozen=True, slots=True)
class TrialReport:
    """One finished trial (the progress callback's argument)."""

    number: int
    #: trials of this run done, and asked for
    done: int
    total: int
    value: float
    interval: list[float] | None
    predictions: int
    best_number: int
    best_value: float
    seconds: float
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TuneResult:
    """The study's best settings, the final paired comparison and where everything went."""

    metric: str
    k: int
    study_name: str
    storage: Path
    trials_run: int
    trials_total: int
    best_trial: int
    #: the best trial's figure on the (sampled) holdout predictions, with its interval
    best_sample_value: float
    best_sample_interval: list[float] | None
    sample: float | None
    #: every tuned setting's best value, and the effective value it replaces
    best: dict[str, Any]
    effective: dict[str, Any]
    #: the final runs on all holdout predictions
    best_run: PrequentialResult
    default_run: PrequentialResult
    comparison: Comparison
    runs: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def changed(self) -> dict[str, Any]:
        """The best settings that differ from the effective ones."""
        return {k: v for k, v in self.best.items() if not _same(v, self.effective.get(k))}

    def difference(self, metric: str | None = None) -> Any:
        """streamrec's paired difference best − defaults of ``metric`` (the tuned one)."""
        wanted = metric or self.metric
        return next(
            d for d in self.comparison.differences if d.model == "streamrec" and d.metric == wanted
        )

    def to_dict(self) -> dict[str, Any]:
        streamrec = self.comparison.to_dict().get("streamrec", {})
        return {
            "metric": self.metric,
            "k": self.k,
            "study": {
                "name": self.study_name,
                "storage": str(self.storage),
                "trials_run": self.trials_run,
                "trials_total": self.trials_total,
                "best_trial": self.best_trial,
                "sample": self.sample,
                "best_sample": {
                    "value": self.best_sample_value,
                    "ci": self.best_sample_interval,
                },
            },
            "best": self.best,
            "effective": self.effective,
            "changed": self.changed,
            "holdout": {
                "best": self.best_run.to_dict()["streamrec"],
                "defaults": self.default_run.to_dict()["streamrec"],
                "popularity": self.default_run.to_dict()["popularity"],
                "difference": streamrec,
                "predictions": self.comparison.predictions,
                "intervals": self.comparison.to_dict()["intervals"],
            },
            "runs": self.runs,
            "elapsed_s": round(self.elapsed_s, 1),
        }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


def _metric_of(result: PrequentialResult, metric: str) -> tuple[float, list[float] | None]:
    row = result.to_dict()["streamrec"]
    return float(row[metric]), row[f"{metric}_ci"]


def _storage(path: Path) -> optuna.storages.RDBStorage:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    except (OSError, optuna.exceptions.StorageInternalError) as exc:
        raise ConfigError(f"--storage {path}: cannot open the study database ({exc})") from exc


def _run(settings: Settings, spec: PrequentialSpec) -> PrequentialResult:
    return asyncio.run(run_prequential(settings, spec))


def _settings_with(base: Settings, values: Mapping[str, Any]) -> Settings:
    """The effective settings with ``values`` on top (validated as keyword arguments are)."""
    return load_settings(config_file=base.config_file, profile=base.profile, **values)


def _final_run(
    settings: Settings, spec: PrequentialSpec, stem: Path, label: str
) -> tuple[PrequentialResult, Path]:
    """A run on every holdout prediction, its per-prediction file and JSON written."""
    result = _run(settings, replace(spec, sample=None))
    assert result.table is not None
    csv_path = stem.with_name(f"{stem.name}.{label}.predictions.csv")
    json_path = stem.with_name(f"{stem.name}.{label}.json")
    try:
        written = write_predictions(csv_path, result.table)
        result = replace(result, predictions_file=written)
        json_path.write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise ConfigError(f"cannot write {json_path}: {exc.strerror or exc}") from exc
    return result, json_path


def tune(
    base: Settings,
    spec: TuneSpec,
    *,
    on_trial: Callable[[TrialReport], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> TuneResult:
    """Run ``spec.trials`` more trials of the study, then the final paired comparison.

    ``base``: the effective settings (what the defaults run uses, and the tuned values are
    laid over). Raises :class:`ConfigError` on bad arguments and whatever a replay raises
    (e.g. :class:`core.errors.UnavailableError` without Redis).
    """
    spec.check()
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=spec.study_name,
        storage=_storage(spec.storage),
        sampler=_sampler(spec.seed),
        direction="maximize",
        load_if_exists=True,
    )
    effective = {p.name: getattr(base, p.name) for p in spec.space}
    if not study.trials:  # a new study starts from the effective settings, then each profile
        for start in (effective, *({**effective, **p.values} for p in PROFILES.values())):
            study.enqueue_trial(_inside(start, spec.space), skip_if_exists=True)
    replay = replace(spec.replay, seed=spec.seed)
    done = 0

    def objective(trial: optuna.trial.Trial) -> float:
        nonlocal done
        began = time.perf_counter()
        values = suggest(trial, spec.space)
        result = _run(_settings_with(base, values), replay)
        if not result.streamrec.n:
            raise ConfigError(
                f"the last {replay.holdout_days:g} days of {replay.path} hold no prediction"
                + ("" if replay.sample is None else " of the sampled users (raise --sample)")
            )
        value, interval = _metric_of(result, spec.metric)
        trial.set_user_attr("ci", interval)
        trial.set_user_attr("predictions", result.streamrec.n)
        trial.set_user_attr("values", values)
        done += 1
        if on_trial is not None:
            finished = [t for t in study.trials if t.value is not None]
            best = max(finished, key=lambda t: float(t.value or 0.0), default=None)
            best_number, best_value = trial.number, value
            if best is not None and float(best.value or 0.0) >= value:
                best_number, best_value = best.number, float(best.value or 0.0)
            on_trial(
                TrialReport(
                    trial.number,
                    done,
                    spec.trials,
                    value,
                    interval,
                    result.streamrec.n,
                    best_number,
                    best_value,
                    time.perf_counter() - began,
                    values,
                )
            )
        return value

    study.optimize(objective, n_trials=spec.trials, catch=())
    best_trial = study.best_trial
    best = dict(best_trial.user_attrs.get("values") or suggest(best_trial, spec.space))
    if on_phase is not None:
        on_phase("final: the best settings on every holdout prediction")
    stem = spec.output.with_suffix("")
    best_run, best_json = _final_run(_settings_with(base, best), spec.replay, stem, "best")
    if on_phase is not None:
        on_phase("final: the effective (default) settings on every holdout prediction")
    default_run, default_json = _final_run(base, spec.replay, stem, "defaults")
    comparison = compare_runs(
        default_json, best_json, resamples=RESAMPLES, seed=spec.seed, level=LEVEL
    )
    return TuneResult(
        metric=spec.metric,
        k=spec.replay.k,
        study_name=spec.study_name,
        storage=spec.storage,
        trials_run=done,
        trials_total=len(study.trials),
        best_trial=best_trial.number,
        best_sample_value=float(best_trial.value or 0.0),
        best_sample_interval=best_trial.user_attrs.get("ci"),
        sample=spec.replay.sample,
        best=best,
        effective=effective,
        best_run=best_run,
        default_run=default_run,
        comparison=comparison,
        runs={"best": str(best_json), "defaults": str(default_json)},
        elapsed_s=time.perf_counter() - started,
    )


def _inside(values: Mapping[str, Any], space: Sequence[Param]) -> dict[str, Any]:
    """The values that lie in the search space (an enqueued trial samples the others)."""
    inside: dict[str, Any] = {}
    for param in space:
        value = values.get(param.name)
        if param.choices:
            if value in param.choices:
                inside[param.name] = value
        elif isinstance(value, int | float) and param.low <= value <= param.high:
            inside[param.name] = int(value) if param.integer else float(value)
    return inside


# --- the config file --------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value}")
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()  # a JSON string is a TOML basic string
    raise TypeError(f"cannot write {value!r} as a TOML setting")


def render_toml(values: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """A TOML config file: ``# header`` lines, then ``name = value`` per setting (sorted)."""
    lines = [f"# {line}".rstrip() for text in header for line in text.splitlines()]
    if lines:
        lines.append("")
    lines.extend(f"{name} = {_toml_value(values[name])}" for name in sorted(values))
    return "\n".join(lines) + "\n"


def config_values(base: Settings, changed: Mapping[str, Any]) -> dict[str, Any]:
    """What the written file holds: the tuned values that changed, on top of what the
    effective config file already set (the new file replaces it in STREAMREC_CONFIG_FILE)."""
    layers = layered_values(Settings.model_fields, init={"config_file": base.config_file})
    kept: dict[str, Any] = dict(layers.from_file)
    if layers.profile_named_in_file and layers.profile:
        kept["profile"] = layers.profile
    return {**kept, **changed}


def write_config(path: Path, values: Mapping[str, Any], header: Sequence[str] = ()) -> None:
    """Write :func:`render_toml` to ``path`` (ConfigError when it cannot be written)."""
    try:
        path.write_text(render_toml(values, header), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--output {path}: cannot write ({exc.strerror or exc})") from exc
