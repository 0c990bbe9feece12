"""The fitted risk model: features, estimator, calibrator, tiers and planning, as one object.

Training builds it, the MLflow PythonModel wraps it, batch scoring calls it directly. Its
``score`` turns validated contract rows into the score table of contract section 5.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from crsrisk.contract.spec import CONTRACT_VERSION
from crsrisk.explain.drivers import Contributions, contributions_for, render_drivers
from crsrisk.modeling.tiers import ActionTiers
from crsrisk.modeling.uncertainty import BootstrapEnsemble

__all__ = [
    "PROBABILITY_FLOOR",
    "DRIVER_SCALE",
    "SCORE_COLUMNS",
    "FLOAT_SCORE_COLUMNS",
    "TIERS",
    "Calibrator",
    "Recalibrated",
    "Tiers",
    "RiskModel",
]

PROBABILITY_FLOOR = 1e-6
DRIVER_SCALE = "log-odds of the model before calibration"
SCORE_COLUMNS = (
    "patient_id",
    "risk",
    "risk_lower",  # 90 % interval across bootstrap refits (empty when the model has none)
    "risk_upper",
    "risk_tier",
    "top_drivers",
    "planning",
    "model_name",
    "model_version",
)
FLOAT_SCORE_COLUMNS = ("risk", "risk_lower", "risk_upper")
TIERS = ("low", "intermediate", "high")


class Calibrator:
    """Maps the model's log-odds margin to a calibrated probability (sigmoid or isotonic)."""

    def __init__(self, method: str = "sigmoid") -> None:
        self.method = method

    def fit(self, margin: np.ndarray, y: np.ndarray) -> Calibrator:
        margin = np.asarray(margin, dtype=float).reshape(-1, 1)
        if self.method == "sigmoid":
            self.model_ = LogisticRegression(C=1e6, max_iter=1000).fit(margin, y)
        elif self.method == "isotonic":
            self.model_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
                margin.ravel(), y
            )
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return self

    def predict(self, margin: np.ndarray) -> np.ndarray:
        margin = np.asarray(margin, dtype=float)
        if self.method == "sigmoid":
            coef = float(self.model_.coef_[0, 0])
            intercept = float(self.model_.intercept_[0])
            p = 1.0 / (1.0 + np.exp(-(intercept + coef * margin)))
        else:
            p = self.model_.predict(margin)
        return np.clip(p, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)


class Recalibrated:
    """A calibrator refitted for a new cohort: ``logit(p) = intercept + slope * logit(base(m))``.

    Logistic recalibration (intercept and slope) composed with the model's existing calibrator,
    as ``crsrisk recalibrate`` fits it for a new site. ``intercept = 0, slope = 1`` is the base.

    Parameters
    ----------
    base
        The calibrator being updated (a `Calibrator`, or another `Recalibrated`).
    intercept, slope
        Of the logistic regression of the new cohort's outcomes on ``logit(base(margin))``.
    cohort
        What it was fitted on (a file name or site), for the record.
    """

    def __init__(self, base: Calibrator | Recalibrated, intercept: float, slope: float,
                 cohort: str = "") -> None:
        self.base = base
        self.intercept = float(intercept)
        self.slope = float(slope)
        self.cohort = cohort

    @property
    def method(self) -> str:
        return f"{self.base.method} + logistic recalibration"

    def predict(self, margin: np.ndarray) -> np.ndarray:
        p = self.base.predict(margin)
        z = self.intercept + self.slope * np.log(p / (1.0 - p))
        return np.clip(1.0 / (1.0 + np.exp(-z)), PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)


@dataclass(frozen=True)
class Tiers:
    """risk < low -> low; low <= risk < high -> intermediate; risk >= high -> high."""

    low: float
    high: float

    def codes(self, risk: np.ndarray) -> np.ndarray:
        """0 low, 1 intermediate, 2 high (positions in TIERS)."""
        return (np.asarray(risk) >= self.low).astype(np.int8) + (
            np.asarray(risk) >= self.high
        ).astype(np.int8)

    def assign(self, risk: np.ndarray) -> np.ndarray:
        return np.asarray(TIERS, dtype=object)[self.codes(risk)]


def _texts(choices: list[str | None], codes: np.ndarray, index: pd.Index) -> pd.Series:
    """``choices[code]`` for each code, as a text column: a few long texts (planning) repeated
    on every row are copied by Arrow instead of being converted row by row."""
    taken = pc.take(pa.array(choices, type=pa.large_string()), pa.array(codes))
    return pd.Series(taken.to_pandas(), dtype="str").set_axis(index)


@dataclass
class RiskModel:
    """A fitted candidate: ``margin`` (log-odds), ``risk`` (calibrated), ``score`` (table)."""

    kind: str
    features: object | None  # FeatureBuilder, or None for the published-score comparators
    estimator: object
    calibrator: Calibrator
    tiers: Tiers
    planning: dict[str, str]
    top_k: int = 3
    name: str = "crs-severe"
    version: str = "unregistered"
    contract_version: str = CONTRACT_VERSION
    info: dict = field(default_factory=dict)
    # Per-patient intervals (None: risk_lower and risk_upper stay empty) and tiers per therapy
    # class (None: `tiers` and `planning` for every row). Both are plain data: to_dict/from_dict.
    uncertainty: BootstrapEnsemble | None = None
    action_tiers: ActionTiers | None = None

    # -- predictions -------------------------------------------------------------------------

    def design(self, valid: pd.DataFrame) -> pd.DataFrame:
        """The model matrix for validated contract rows."""
        return self.features.transform(valid) if self.features is not None else valid

    def margin(self, valid: pd.DataFrame, design: pd.DataFrame | None = None) -> np.ndarray:
        """Uncalibrated log-odds."""
        design = self.design(valid) if design is None else design
        if self.kind == "xgboost":
            # In-place prediction skips the DMatrix copy; the margins are identical.
            booster = self.estimator.get_booster()
            return booster.inplace_predict(design, predict_type="margin")
        return np.asarray(self.estimator.decision_function(design), dtype=float)

    def risk(self, valid: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of ASTCT grade >= 3 CRS."""
        return self.calibrator.predict(self.margin(valid))

    def contributions(
        self, valid: pd.DataFrame, design: pd.DataFrame | None = None
    ) -> Contributions:
        """Per-feature contributions to the margin (TreeSHAP or exact linear terms)."""
        return contributions_for(self, valid, design)

    def score(self, valid: pd.DataFrame, drivers: bool = True,
              design: pd.DataFrame | None = None) -> pd.DataFrame:
        """The score table (contract section 5) for validated rows, in their order.

        ``design``: ``self.design(valid)``, when already computed.
        """
        design = self.design(valid) if design is None else design
        # Risk always comes from the model's own margin: summed float32 contributions can
        # differ from it in the 7th digit, and a patient's risk must not depend on drivers.
        margin = self.margin(valid, design)
        if drivers:
            top = render_drivers(self.contributions(valid, design), valid, self.top_k)
        else:
            top = pd.Series(pd.NA, index=valid.index, dtype="str")
        risk = self.calibrator.predict(margin)
        if self.uncertainty is not None:
            lower, upper = self.uncertainty.interval(design, margin, self.calibrator)
        else:
            lower = upper = np.full(len(risk), np.nan)
        if self.action_tiers is not None:
            codes = self.action_tiers.codes(valid, risk)
            choices, plan = self.action_tiers.planning(valid, codes)
        else:
            codes = self.tiers.codes(risk)
            choices, plan = [self.planning.get(t) for t in TIERS], codes
        n = np.zeros(len(risk), dtype=np.int8)
        return pd.DataFrame(
            {
                "patient_id": valid["patient_id"].astype("str"),
                "risk": risk,
                "risk_lower": lower,
                "risk_upper": upper,
                "risk_tier": _texts(list(TIERS), codes, valid.index),
                "top_drivers": top,
                "planning": _texts(choices, plan, valid.index),
                "model_name": _texts([self.name], n, valid.index),
                "model_version": _texts([str(self.version)], n, valid.index),
            },
            index=valid.index,
        )

    # -- persistence ---------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write the model to ``folder``: booster as UBJSON, the rest with joblib, meta as JSON."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        estimator = self.estimator
        if self.kind == "xgboost":
            estimator.get_booster().save_model(folder / "booster.ubj")
        joblib.dump(self, folder / "risk_model.joblib")
        (folder / "meta.json").write_text(json.dumps(self.meta(), indent=2, sort_keys=True))
        return folder

    def meta(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": str(self.version),
            "contract_version": self.contract_version,
            "tiers": {"low": self.tiers.low, "high": self.tiers.high},
            "drivers_scale": DRIVER_SCALE,
            "python": platform.python_version(),
            "xgboost": xgb.__version__,
            **self.info,
        }

    @staticmethod
    def load(folder: str | Path) -> RiskModel:
        folder = Path(folder)
        model: RiskModel = joblib.load(folder / "risk_model.joblib")
        if model.kind == "xgboost":
            booster = xgb.Booster()
            booster.load_model(folder / "booster.ubj")
            model.estimator.get_booster().load_model(bytearray(booster.save_raw("ubj")))
        return model
