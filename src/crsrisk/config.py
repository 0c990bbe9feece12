"""Typed configuration for configs/*.yaml (pydantic): one object per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from crsrisk.errors import CrsriskError

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_MODEL_URI",
    "CANDIDATES",
    "ConfigError",
    "SplitConfig",
    "CVConfig",
    "SearchConfig",
    "TierConfig",
    "SampleSizeConfig",
    "ValidationConfig",
    "UncertaintyConfig",
    "PromotionConfig",
    "TrackingConfig",
    "PlanningAction",
    "TierActions",
    "ClassPlanning",
    "ScoreConfig",
    "TrainConfig",
    "load_score_config",
    "load_train_config",
]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_MODEL_URI = "models:/crs-severe@champion"  # the champion in the registry
CANDIDATES = ("m_easix", "easix", "car_hematotox", "parsimonious", "logistic", "xgboost",
              "xgboost_monotone")


class ConfigError(CrsriskError, ValueError):
    """A configuration file cannot be used."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Strict):
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    temporal: bool = False


class CVConfig(_Strict):
    folds: int = Field(5, ge=2, le=20)
    group_by_site: bool = False


class SearchConfig(_Strict):
    xgboost_trials: int = Field(6, ge=1, le=100)
    logistic_c: tuple[float, ...] = (0.03, 0.3, 3.0)
    logistic_splines: tuple[bool, ...] = (False, True)
    parsimonious_c: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)


class SampleSizeConfig(_Strict):
    """Riley et al. minimum sample size, checked per candidate before fitting."""

    anticipated_auroc: float = Field(0.78, gt=0.5, lt=1.0)
    skip_unsupported: bool = True
    force: tuple[Literal[CANDIDATES], ...] = ()  # type: ignore[valid-type]  # candidates to fit even where the cohort cannot support them


class ValidationConfig(_Strict):
    """Split-sample or bootstrap internal validation, chosen by the smaller class's size."""

    design: Literal["auto", "split", "bootstrap"] = "auto"
    bootstrap_below: int = Field(200, ge=1)  # auto: bootstrap when the smaller class is below
    bootstrap_repeats: int = Field(200, ge=2, le=5000)
    n_jobs: int = Field(1, ge=1, le=64)


class UncertaintyConfig(_Strict):
    """Per-patient intervals from bootstrap refits of the selected model."""

    models: int = Field(40, ge=0, le=1000)  # 0: no intervals
    level: float = Field(0.90, gt=0.5, lt=1.0)


class TierConfig(_Strict):
    """Targets of `choose_tiers` (thresholds placed by sensitivity and NPV). Training no longer
    uses it: tiers come from the planning actions of the score config."""

    high_sensitivity: float = Field(0.80, gt=0.0, lt=1.0)
    low_npv: float = Field(0.98, gt=0.0, lt=1.0)


class PromotionConfig(_Strict):
    metric: Literal["log_loss", "brier"] = "log_loss"
    min_improvement: float = Field(0.0, ge=0.0)


class TrackingConfig(_Strict):
    uri: str = "sqlite:///mlflow.db"
    artifact_root: str = "mlartifacts"
    experiment: str = "crs-severe"
    model_name: str = "crs-severe"


class PlanningAction(_Strict):
    text: str
    evidence: str
    # Only for these diagnoses (empty: all); e.g. an action whose evidence is from myeloma.
    diagnoses: tuple[str, ...] = ()


class TierActions(_Strict):
    """The actions of one tier, and the risk at which a team would take them."""

    risk_at_least: float | None = Field(None, gt=0.0, lt=1.0)  # None for the low tier
    why: str = ""  # why a team acts at this risk
    actions: tuple[PlanningAction, ...]


class ClassPlanning(_Strict):
    """Tiers and planning actions of one therapy class."""

    low: TierActions
    intermediate: TierActions
    high: TierActions

    @pydantic.model_validator(mode="after")
    def _thresholds(self) -> ClassPlanning:
        if self.low.risk_at_least is not None:
            raise ValueError("the low tier has no risk_at_least: it is everything below "
                             "intermediate")
        lower, upper = self.intermediate.risk_at_least, self.high.risk_at_least
        if lower is None or upper is None:
            raise ValueError("intermediate and high each need risk_at_least")
        if not lower < upper:
            raise ValueError(f"intermediate's risk_at_least ({lower}) must be below high's "
                             f"({upper})")
        return self


class ScoreConfig(_Strict):
    disclaimer: str
    therapy_classes: dict[Literal["CAR-T", "bispecific"], ClassPlanning]

    @pydantic.model_validator(mode="after")
    def _every_class(self) -> ScoreConfig:
        missing = {"CAR-T", "bispecific"} - set(self.therapy_classes)
        if missing:
            raise ValueError(f"therapy_classes needs {', '.join(sorted(missing))}")
        return self


class TrainConfig(_Strict):
    seed: int = 0
    candidates: tuple[Literal[CANDIDATES], ...] = CANDIDATES  # type: ignore[valid-type]
    split: SplitConfig = SplitConfig()
    cv: CVConfig = CVConfig()
    search: SearchConfig = SearchConfig()
    calibration: tuple[Literal["sigmoid", "isotonic"], ...] = ("sigmoid", "isotonic")
    selection_metric: Literal["log_loss"] = "log_loss"
    tiers: TierConfig = TierConfig()
    sample_size: SampleSizeConfig = SampleSizeConfig()
    validation: ValidationConfig = ValidationConfig()
    uncertainty: UncertaintyConfig = UncertaintyConfig()
    drivers_top_k: int = Field(3, ge=1, le=20)
    promotion: PromotionConfig = PromotionConfig()
    tracking: TrackingConfig = TrackingConfig()
    score_config: str = "score.yaml"
    # Filled by load_train_config: the planning actions the model will carry.
    score: ScoreConfig | None = None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist: check the path.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML ({exc}).") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of settings.")
    return data


def _parse(model: type[BaseModel], data: dict, path: Path) -> BaseModel:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"Config file {path}: {where}: {first['msg']}.") from exc


def load_score_config(path: str | Path | None = None) -> ScoreConfig:
    """Planning actions per tier (configs/score.yaml by default)."""
    path = Path(path) if path else CONFIG_DIR / "score.yaml"
    return _parse(ScoreConfig, _read_yaml(path), path)  # type: ignore[return-value]


def load_train_config(path: str | Path | None = None) -> TrainConfig:
    """The training configuration (configs/train.yaml by default), with its score config."""
    path = Path(path) if path else CONFIG_DIR / "train.yaml"
    config: TrainConfig = _parse(TrainConfig, _read_yaml(path), path)  # type: ignore[assignment]
    score = load_score_config(path.parent / config.score_config)
    return config.model_copy(update={"score": score})
