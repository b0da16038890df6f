"""Ranker parameters: one frozen config object, built from settings, overridable per variant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.settings import Settings, setting_default, setting_field
from schemas.rules import ParamValue

Normalisation = Literal["row", "none"]


class RankerConfig(BaseModel):
    """Everything the pure ranker needs to know besides its inputs (see ``serving.ranker``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Defaults, bounds and descriptions are those of the ranker_* settings (declared once, in
    # core/settings.py); experiment variants override them within the same bounds.
    max_anchors: int = setting_field("ranker_max_anchors")
    anchor_decay_s: float = setting_field("ranker_anchor_decay_s")
    anchor_position_decay: float = setting_field("ranker_anchor_position_decay")
    neighbours_per_anchor: int = setting_field("ranker_neighbours_per_anchor")
    normalisation: Normalisation = Field(
        setting_default("ranker_normalisation"),
        description="row: covis(a,b) / Σ covis(a,·) over the neighbours read; none: raw.",
    )
    popularity_exponent: float = setting_field("ranker_popularity_exponent")
    max_category_share: float = setting_field("ranker_max_category_share")
    exclude_seen: bool = setting_field("ranker_exclude_seen")
    self_neighbours: bool = setting_field("ranker_self_neighbours")
    demote_min_impressions: float = setting_field("ranker_demote_min_impressions")
    demote_factor: float = setting_field("ranker_demote_factor")
    session_blend: float = setting_field("ranker_session_blend")
    session_neighbours: int = setting_field("ranker_session_neighbours")
    session_sample: int = setting_field("ranker_session_sample")
    session_items: int = setting_field("ranker_session_items")
    # not a setting: only experiment variants change it
    backfill_depth: int = Field(
        20, ge=1, le=1000, description="Extra candidates taken from popularity beyond k."
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> RankerConfig:
        """The ``ranker_<field>`` settings (every field but ``backfill_depth`` is one)."""
        return cls.model_validate(
            {
                name: getattr(settings, f"ranker_{name}")
                for name in cls.model_fields
                if f"ranker_{name}" in Settings.model_fields
            }
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
