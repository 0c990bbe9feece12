"""Typed configuration (pydantic): one object per stage, read from YAML files.

The defaults ship inside the package (``crsrisk/defaults/*.yaml``, read with importlib.resources,
so an installed wheel has them); ``configs/`` in the repository holds the same files as examples
to copy. A path inside a config file (``score_config``, a SQLite ``tracking.uri``,
``tracking.artifact_root``) is relative to that file, wherever it was copied.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from crsrisk.errors import CrsriskError

__all__ = [
    "DEFAULTS",
    "PROJECT_FILE",
    "DEFAULT_MODEL_URI",
    "CANDIDATES",
    "ConfigError",
    "SplitConfig",
    "CVConfig",
    "SearchConfig",
    "TierConfig",
    "PromotionConfig",
    "TrackingConfig",
    "PlanningAction",
    "ScoreConfig",
    "TrainConfig",
    "load_score_config",
    "load_train_config",
    "find_project_file",
    "load_project_tracking",
]

# The packaged default configs (train.yaml, score.yaml).
DEFAULTS: Traversable = importlib.resources.files("crsrisk") / "defaults"
# A project's own settings, looked for in the working directory and the folders above it.
PROJECT_FILE = "crsrisk.toml"
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
    """Where runs and registered models go (see crsrisk.mlops.registry.locate_store).

    ``uri`` None: ``MLFLOW_TRACKING_URI``, else a project's crsrisk.toml, else the per-user
    store. ``artifact_root`` None: beside a SQLite store's file, or the server's choice.
    """

    uri: str | None = None
    artifact_root: str | None = None
    experiment: str = "crs-severe"
    model_name: str = "crs-severe"
    # The file the settings came from, for messages; never read from a file itself.
    origin: str | None = Field(None, exclude=True)


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
    # Planning actions per tier: a YAML file relative to this config; None: the packaged ones.
    score_config: str | None = None
    # Filled by load_train_config: the planning actions the model will carry.
    score: ScoreConfig | None = None


def _read_yaml(path: Path | Traversable) -> dict:
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist: check the path.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML ({exc}).") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {path} cannot be read ({exc}).") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of settings.")
    return data


def _parse(model: type[BaseModel], data: dict, path: Path | Traversable) -> BaseModel:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"Config file {path}: {where}: {first['msg']}.") from exc


def _anchored_tracking(data: object, folder: Path, origin: str) -> object:
    """The tracking settings with a relative SQLite file and artefact folder made absolute."""
    if not isinstance(data, dict):
        return data  # pydantic names the problem
    data = {**data, "origin": origin}
    uri, prefix = data.get("uri"), "sqlite:///"
    if isinstance(uri, str) and uri.startswith(prefix):
        database = Path(uri[len(prefix):])
        if not database.is_absolute():
            data["uri"] = prefix + str((folder / database).resolve())
    root = data.get("artifact_root")
    if isinstance(root, str) and "://" not in root and not Path(root).is_absolute():
        data["artifact_root"] = str((folder / root).resolve())
    return data


def load_score_config(path: str | Path | None = None) -> ScoreConfig:
    """Planning actions per tier (the packaged default score.yaml when ``path`` is None)."""
    source = Path(path) if path else DEFAULTS / "score.yaml"
    return _parse(ScoreConfig, _read_yaml(source), source)  # type: ignore[return-value]


def load_train_config(path: str | Path | None = None) -> TrainConfig:
    """The training configuration with its score config.

    Parameters
    ----------
    path
        A YAML file; None gives the packaged default train.yaml. Paths inside the file are
        relative to the file.

    Returns
    -------
    TrainConfig

    Raises
    ------
    ConfigError
        The file, or the score config it names, is missing, not YAML or holds a bad setting.
    """
    source: Path | Traversable = Path(path) if path else DEFAULTS / "train.yaml"
    data = _read_yaml(source)
    if isinstance(source, Path) and "tracking" in data:
        data["tracking"] = _anchored_tracking(data["tracking"], source.resolve().parent,
                                              str(source))
    config: TrainConfig = _parse(TrainConfig, data, source)  # type: ignore[assignment]
    if config.score_config is None:
        score_source: Path | Traversable = DEFAULTS / "score.yaml"
    elif isinstance(source, Path):
        score_source = source.resolve().parent / config.score_config
        if not score_source.is_file():
            raise ConfigError(
                f"Config file {score_source}, named by score_config in {source}, does not exist: "
                "copy it beside the config, fix the path, or remove score_config to use the "
                "packaged planning actions."
            )
    else:
        score_source = DEFAULTS.joinpath(*Path(config.score_config).parts)
    score = _parse(ScoreConfig, _read_yaml(score_source), score_source)
    return config.model_copy(update={"score": score})


def find_project_file(start: Path | None = None) -> Path | None:
    """The nearest crsrisk.toml in ``start`` (default: the working directory) or above it."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate / PROJECT_FILE
    return None


def load_project_tracking(start: Path | None = None) -> TrackingConfig | None:
    """The ``[tracking]`` table of the project's crsrisk.toml, or None without one.

    Relative paths in it are relative to the file.

    Raises
    ------
    ConfigError
        The file is not TOML or its tracking table holds an unknown or bad setting.
    """
    path = find_project_file(start)
    if path is None:
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Project file {path} cannot be read as TOML ({exc}).") from exc
    tracking = data.get("tracking")
    if tracking is None:
        return None
    anchored = _anchored_tracking(tracking, path.parent, str(path))
    try:
        return TrackingConfig.model_validate(anchored)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"Project file {path}: tracking.{where}: {first['msg']}.") from exc
