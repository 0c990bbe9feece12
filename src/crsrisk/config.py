"""Typed configuration (pydantic): one object per stage, read from YAML files.

`load_yaml_model` is the one loader of every YAML file, the site mappings included
(crsrisk.contract.mapping holds their model): a missing file, a YAML mistake or a bad key is one
sentence naming the file and the key.

The defaults ship inside the package (``crsrisk/defaults/*.yaml``, read with importlib.resources,
so an installed wheel has them); ``configs/`` in the repository holds the same files as examples
to copy. A path inside a config file (``score_config``, a SQLite ``tracking.uri``,
``tracking.artifact_root``) is relative to that file, wherever it was copied.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from collections.abc import Callable
from datetime import date
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal, TypeVar

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import ErrorDetails

from crsrisk.errors import CrsriskError

__all__ = [
    "DEFAULTS",
    "PROJECT_FILE",
    "DEFAULT_MODEL_URI",
    "CANDIDATES",
    "DEFAULT_CANDIDATES",
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
    "MIN_CELL_FLOOR",
    "PrivacyConfig",
    "PlanningAction",
    "TierActions",
    "ClassPlanning",
    "ScoreConfig",
    "SimulationConfig",
    "TrainConfig",
    "read_yaml",
    "parse_model",
    "load_yaml_model",
    "load_score_config",
    "load_simulation_config",
    "load_train_config",
    "find_project_file",
    "load_project_tracking",
]

# The packaged default configs (train.yaml, score.yaml).
DEFAULTS: Traversable = importlib.resources.files("crsrisk") / "defaults"
# A project's own settings, looked for in the working directory and the folders above it.
PROJECT_FILE = "crsrisk.toml"
DEFAULT_MODEL_URI = "models:/crs-severe@champion"  # the champion in the registry
CANDIDATES = ("m_easix", "easix", "car_hematotox", "burden", "parsimonious", "logistic",
              "xgboost", "xgboost_monotone")
# Fitted unless the train config lists its own. The burden-only model is opt-in: on simulated
# 200-patient cohorts, letting it compete by CV log loss lowered the procedure's out-of-fold AUROC.
DEFAULT_CANDIDATES = tuple(c for c in CANDIDATES if c != "burden")


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
    # Leave one site / one infusion year out at a time (auto: both, bootstrap design only).
    internal_external: Literal["auto", "site", "year", "both", "off"] = "auto"


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


MIN_CELL_FLOOR = 5  # no setting may publish a count of fewer patients than this


class PrivacyConfig(_Strict):
    """Counts of fewer than ``min_cell`` patients are withheld from every table that leaves the
    site (report, evaluation JSON, MLflow artefacts); see `crsrisk.evaluation.privacy`."""

    min_cell: int = Field(10, ge=MIN_CELL_FLOOR)


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
    candidates: tuple[Literal[CANDIDATES], ...] = DEFAULT_CANDIDATES  # type: ignore[valid-type]
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
    privacy: PrivacyConfig = PrivacyConfig()
    # Planning actions per tier: a YAML file relative to this config; None: the packaged ones.
    score_config: str | None = None
    # Filled by load_train_config: the planning actions the model will carry.
    score: ScoreConfig | None = None


class SimulationConfig(_Strict):
    """Settings of the cohort simulator (configs/simulate.yaml).

    Attributes
    ----------
    n, seed
        Cohort size and seed used by callers that simulate from a config file;
        ``simulate_cohort`` takes its own ``n`` and ``seed`` arguments and ignores these.
    n_sites
        Number of treating centres, named ``site_A``, ``site_B``, ...
    start_date, end_date
        Range of infusion dates. Fixed dates rather than "today", so a seed always gives the
        same cohort; not before the contract's first date, 2009-01-01.
    other_scale_fraction
        Fraction of sites that report ``crs_max_grade`` on Lee 2014 or Penn instead of ASTCT.
        The raw events stay the ASTCT ground truth.
    """

    n: int = Field(5000, ge=1)
    seed: int = 20240601
    n_sites: int = Field(8, ge=1, le=702)
    start_date: date = Field(date(2017, 6, 1), ge=date(2009, 1, 1))
    end_date: date = date(2026, 6, 30)
    other_scale_fraction: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("end_date")
    @classmethod
    def _after_start(cls, end: date, info: pydantic.ValidationInfo) -> date:
        start = info.data.get("start_date")
        if start is not None and not start < end:
            raise ValueError(f"start_date {start} must precede end_date {end}")
        return end


class _TextLoader(yaml.SafeLoader):
    """A YAML loader that reads every scalar except null as text.

    Plain YAML turns codes such as ``yes``, ``no``, ``1`` or ``1.0`` into booleans and numbers,
    which then never match the text cells of a CSV file (site mappings need the text).
    """


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

Model = TypeVar("Model", bound=BaseModel)
# Turns pydantic's first error into the words after "<what> <path>"; None: the default wording.
Describe = Callable[[ErrorDetails], "str | None"]


def read_yaml(path: Path | Traversable, *, what: str = "Config file",
              error: type[CrsriskError] = ConfigError, text: bool = False) -> dict:
    """The top-level mapping of a YAML file.

    Parameters
    ----------
    path
        The file.
    what, error
        How messages name the file ("Config file", "Mapping file") and the error raised.
    text
        Read every scalar but null as text (codes such as ``yes`` or ``1`` stay text).

    Raises
    ------
    CrsriskError
        ``error``: the file is missing, unreadable, not YAML or not a mapping at its top level.
    """
    if not path.is_file():
        raise error(f"{what} {path} does not exist: check the path.")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"),
                         Loader=_TextLoader if text else yaml.SafeLoader)
    except yaml.YAMLError as exc:
        # PyYAML's own message spans several lines; one sentence names the problem and place.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise error(f"{what} {path} is not valid YAML{where} ({problem}): fix the syntax."
                    ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} cannot be read ({exc}).") from exc
    if not isinstance(data, dict):
        raise error(f"{what} {path} is not a YAML mapping: write its settings as keys at the "
                    "top level.")
    return data


def parse_model(model: type[Model], data: dict, path: Path | Traversable, *,
                what: str = "Config file", error: type[CrsriskError] = ConfigError,
                describe: Describe | None = None) -> Model:
    """``data`` checked as ``model``; a bad value or key raises one sentence naming the file
    and the key (see `load_yaml_model`)."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, CrsriskError):  # a validator's own sentence
            raise error(f"{what} {path}: {cause}") from exc
        described = describe(first) if describe is not None else None
        if described is not None:
            raise error(f"{what} {path} {described}") from exc
        where = ".".join(str(p) for p in first["loc"])
        raise error(f"{what} {path}: {where}: {first['msg']}.") from exc


def load_yaml_model(path: Path | Traversable, model: type[Model], *, what: str = "Config file",
                    error: type[CrsriskError] = ConfigError, text: bool = False,
                    describe: Describe | None = None) -> Model:
    """A YAML file read and checked as the pydantic ``model``: the one loader of every YAML.

    Parameters
    ----------
    path
        The file.
    model
        The pydantic model of its content.
    what, error
        How messages name the file ("Config file", "Mapping file") and the error raised.
    text
        Read every scalar but null as text (see `read_yaml`).
    describe
        Words for pydantic's first error after "<what> <path>", where the default
        ("<what> <path>: <key>: <problem>.") is not enough; None for the default.

    Raises
    ------
    CrsriskError
        ``error``, with one sentence naming the file and, for a bad setting, its key.
    """
    data = read_yaml(path, what=what, error=error, text=text)
    return parse_model(model, data, path, what=what, error=error, describe=describe)


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
    return load_yaml_model(source, ScoreConfig)


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
    data = read_yaml(source)
    if isinstance(source, Path) and "tracking" in data:
        data["tracking"] = _anchored_tracking(data["tracking"], source.resolve().parent,
                                              str(source))
    config = parse_model(TrainConfig, data, source)
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
    score = load_yaml_model(score_source, ScoreConfig)
    return config.model_copy(update={"score": score})


def load_simulation_config(path: str | Path | None = None) -> SimulationConfig:
    """Simulator settings from a YAML file such as configs/simulate.yaml; defaults when None.

    Raises
    ------
    ConfigError
        One sentence naming the file and the first unknown key or bad value.
    """
    if path is None:
        return SimulationConfig()
    path = Path(path)
    return load_yaml_model(path, SimulationConfig)


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
