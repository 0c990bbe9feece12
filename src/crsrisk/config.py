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
    "PromotionConfig",
    "TrackingConfig",
    "MIN_CELL_FLOOR",
    "PrivacyConfig",
    "PlanningAction",
    "ScoreConfig",
    "TrainConfig",
    "load_score_config",
    "load_train_config",
]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_MODEL_URI = "models:/crs-severe@champion"  # the champion in the registry
CANDIDATES = ("m_easix", "easix", "car_hematotox", "logistic", "xgboost")


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


class TierConfig(_Strict):
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


MIN_CELL_FLOOR = 5  # no setting may publish a count of fewer patients than this


class PrivacyConfig(_Strict):
    """Counts of fewer than ``min_cell`` patients are withheld from every table that leaves the
    site (report, evaluation JSON, MLflow artefacts); see `crsrisk.evaluation.privacy`."""

    min_cell: int = Field(10, ge=MIN_CELL_FLOOR)


class PlanningAction(_Strict):
    text: str
    evidence: str


class ScoreConfig(_Strict):
    disclaimer: str
    planning: dict[Literal["low", "intermediate", "high"], tuple[PlanningAction, ...]]


class TrainConfig(_Strict):
    seed: int = 0
    candidates: tuple[Literal[CANDIDATES], ...] = CANDIDATES  # type: ignore[valid-type]
    split: SplitConfig = SplitConfig()
    cv: CVConfig = CVConfig()
    search: SearchConfig = SearchConfig()
    calibration: tuple[Literal["sigmoid", "isotonic"], ...] = ("sigmoid", "isotonic")
    selection_metric: Literal["log_loss"] = "log_loss"
    tiers: TierConfig = TierConfig()
    drivers_top_k: int = Field(3, ge=1, le=20)
    promotion: PromotionConfig = PromotionConfig()
    tracking: TrackingConfig = TrackingConfig()
    privacy: PrivacyConfig = PrivacyConfig()
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
