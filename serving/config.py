"""Ranker parameters: one frozen config object, built from settings, overridable per variant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.settings import Settings
from schemas.rules import ParamValue

Normalisation = Literal["row", "none"]


class RankerConfig(BaseModel):
    """Everything the pure ranker needs to know besides its inputs (see ``serving.ranker``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_anchors: int = Field(10, ge=1, le=100, description="Recent items used as anchors.")
    anchor_decay_s: float = Field(
        86_400.0, gt=0, description="Anchor weight time constant (exp(-age / this))."
    )
    anchor_position_decay: float = Field(
        0.5, gt=0, le=1, description="Anchor weight factor per position back in history."
    )
    neighbours_per_anchor: int = Field(50, ge=1, le=1000, description="Neighbours per anchor.")
    normalisation: Normalisation = Field(
        "row", description="row: covis(a,b) / Σ covis(a,·) over the neighbours read; none: raw."
    )
    popularity_exponent: float = Field(
        0.25, ge=0, le=2, description="β: a personal score is divided by relpop(b)^β."
    )
    max_category_share: float = Field(
        0.5, gt=0, le=1, description="Most of the top-k one category may take (1 = no cap)."
    )
    exclude_seen: bool = Field(True, description="Drop items the user has already seen.")
    self_neighbours: bool = Field(
        False,
        description="Let an anchor's self edge covis(a,a) (learned from repeat clicks, see "
        "covis_self_weight) recommend the anchor again; for session / repeat-consumption "
        "data with exclude_seen off.",
    )
    demote_min_impressions: float = Field(
        0.0, ge=0, description="Demote items with this many impressions and no click (0 = off)."
    )
    demote_factor: float = Field(0.5, gt=0, le=1, description="Score factor of demoted items.")
    backfill_depth: int = Field(
        20, ge=1, le=1000, description="Extra candidates taken from popularity beyond k."
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> RankerConfig:
        return cls(
            max_anchors=settings.ranker_max_anchors,
            anchor_decay_s=settings.ranker_anchor_decay_s,
            anchor_position_decay=settings.ranker_anchor_position_decay,
            neighbours_per_anchor=settings.ranker_neighbours_per_anchor,
            normalisation="none" if settings.ranker_normalisation == "none" else "row",
            popularity_exponent=settings.ranker_popularity_exponent,
            max_category_share=settings.ranker_max_category_share,
            exclude_seen=settings.ranker_exclude_seen,
            self_neighbours=settings.ranker_self_neighbours,
            demote_min_impressions=settings.ranker_demote_min_impressions,
            demote_factor=settings.ranker_demote_factor,
        )

    def with_overrides(self, params: Mapping[str, ParamValue]) -> RankerConfig:
        """A copy with ``params`` applied; unknown names or bad values raise ``ValueError``."""
        if not params:
            return self
        unknown = sorted(set(params) - set(type(self).model_fields))
        if unknown:
            known = ", ".join(sorted(type(self).model_fields))
            raise ValueError(f"unknown ranker parameter(s) {unknown} (known: {known})")
        try:
            return type(self).model_validate({**self.model_dump(), **params})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"bad ranker parameter {where}: {first['msg']}") from exc
