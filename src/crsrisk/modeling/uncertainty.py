"""Per-patient uncertainty: how much a patient's risk moves when the model is refitted on
bootstrap resamples of the development cohort (Riley and Collins 2023, instability).

At training the selected model's estimator is refitted on ``B`` bootstrap resamples (its
features, settings and calibrator fixed), and the spread of each development patient's log-odds
across the refits is measured. At scoring a patient's 90 % interval is the model's own log-odds
plus or minus 1.645 of that spread, through the calibrator. The spread of a new patient comes
from a compact form kept with the model, chosen so that intervals cost little when scoring:

* logistic models (``"linear"``): the covariance of the refits' coefficients, so the spread is
  exact for the refits (``sqrt(x' S x)``, one small matrix product per row);
* XGBoost (``"emulator"``): a 40-tree depth-3 booster that predicts the log of the spread
  from the design, trained on the development patients' measured spreads (an emulator: a
  tenth of the cost of the model's own booster instead of ``B`` boosters);
* published scores (``"margin"``): the log spread as a quadratic in the score's log-odds
  (their refits only move the score's intercept and slope).

Everything is stored as plain data (JSON numbers, the emulator as UBJSON), never pickled.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from scipy import stats

from crsrisk.modeling.adapters import xgboost_input

__all__ = [
    "ENSEMBLE_FILE",
    "BootstrapEnsemble",
    "fit_ensemble",
    "mean_absolute_prediction_error",
    "instability_plot",
]

ENSEMBLE_FILE = "uncertainty.json"


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


@lru_cache(maxsize=8)
def _normal_quantile(p: float) -> float:
    """The standard normal quantile (scipy's costs a tenth of a one-patient request's interval)."""
    return float(stats.norm.ppf(p))


@dataclass
class BootstrapEnsemble:
    """The spread of a patient's log-odds across bootstrap refits, in a compact form.

    Attributes
    ----------
    method
        ``"linear"``, ``"emulator"`` or ``"margin"`` (see the module notes).
    level
        Coverage of the interval, e.g. 0.90.
    members
        Bootstrap refits it summarises.
    mape
        Mean absolute prediction error on the development rows: the mean over patients and
        refits of ``|refit risk - model risk|``.
    columns, covariance
        ``"linear"``: design columns and the covariance of (intercept, coefficients).
    emulator
        ``"emulator"``: the booster, UBJSON bytes.
    polynomial
        ``"margin"``: coefficients of log spread = a + b m + c m^2.
    """

    method: str
    level: float
    members: int
    mape: float
    columns: list[str] = field(default_factory=list)
    covariance: np.ndarray | None = None
    emulator: bytes | None = None
    polynomial: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._booster: xgb.Booster | None = None

    # -- prediction ------------------------------------------------------------------------

    def spread(self, design: pd.DataFrame, margin: np.ndarray) -> np.ndarray:
        """Standard deviation of each row's log-odds across the refits."""
        if self.method == "linear":
            x = np.asarray(design[self.columns], dtype=float)
            c = self.covariance
            # var = S00 + 2 x.S0j + x' Sjj x, without forming an n x n matrix.
            var = c[0, 0] + 2 * x @ c[0, 1:] + np.einsum("ij,jk,ik->i", x, c[1:, 1:], x)
            return np.sqrt(np.maximum(var, 0.0))
        if self.method == "emulator":
            if self._booster is None:
                self._booster = xgb.Booster()
                self._booster.load_model(bytearray(self.emulator))
            names = self._booster.feature_names
            return np.exp(self._booster.inplace_predict(xgboost_input(design, names)))
        a, b, c = self.polynomial
        m = np.asarray(margin, dtype=float)
        return np.exp(a + b * m + c * m * m)

    def interval(self, design: pd.DataFrame, margin: np.ndarray,
                 calibrator: object) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper risk of each row's interval (``calibrator`` maps log-odds to risk)."""
        z = _normal_quantile(0.5 + self.level / 2)
        half = z * self.spread(design, margin)
        margin = np.asarray(margin, dtype=float)
        return calibrator.predict(margin - half), calibrator.predict(margin + half)

    # -- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-ready data (the emulator booster as base64 UBJSON)."""
        return {
            "method": self.method, "level": self.level, "members": self.members,
            "mape": self.mape, "columns": list(self.columns),
            "covariance": None if self.covariance is None else self.covariance.tolist(),
            "emulator": None if self.emulator is None
            else base64.b64encode(self.emulator).decode("ascii"),
            "polynomial": list(self.polynomial),
        }

    @classmethod
    def from_dict(cls, data: dict) -> BootstrapEnsemble:
        return cls(
            method=data["method"], level=float(data["level"]), members=int(data["members"]),
            mape=float(data["mape"]), columns=list(data["columns"]),
            covariance=None if data["covariance"] is None
            else np.asarray(data["covariance"], dtype=float),
            emulator=None if data["emulator"] is None else base64.b64decode(data["emulator"]),
            polynomial=[float(v) for v in data["polynomial"]],
        )

    def save(self, folder: str | Path) -> Path:
        """Write ``uncertainty.json`` into ``folder`` (created if needed)."""
        path = Path(folder) / ENSEMBLE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> BootstrapEnsemble:
        return cls.from_dict(json.loads((Path(folder) / ENSEMBLE_FILE).read_text("utf-8")))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_booster"] = None  # rebuilt from the UBJSON bytes
        return state


def _resamples(y: np.ndarray, members: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``members`` bootstrap resamples (row positions), each with both outcomes."""
    resamples: list[np.ndarray] = []
    while len(resamples) < members:
        rows = rng.integers(0, len(y), len(y))
        if y[rows].min() == y[rows].max():
            continue  # a resample with one outcome cannot be fitted: draw again
        resamples.append(rows)
    return resamples


def fit_ensemble(model: object, estimator: object, valid: pd.DataFrame, y: np.ndarray,
                 members: int, level: float, seed: int = 0
                 ) -> tuple[BootstrapEnsemble, np.ndarray]:
    """Refit ``estimator`` on ``members`` bootstrap resamples of the development rows.

    The model's adapter (crsrisk.modeling.adapters) fits the refits and chooses the compact
    form of their spread; the selected hyper-parameters are reused, never searched again.

    Parameters
    ----------
    model
        The fitted RiskModel (its features and calibrator stay fixed).
    estimator
        An unfitted estimator of the model's type that takes the model's design matrix (the
        ``model`` step of the candidate's pipeline, or the published score's comparator).
    valid, y
        The development rows and outcomes.
    members, level, seed
        Number of refits, interval coverage, reproducibility.

    Returns
    -------
    ensemble : BootstrapEnsemble
    risks : ndarray of shape (members, n)
        Each refit's risk for each development row (for the instability plot and MAPE).
    """
    y = np.asarray(y, dtype=int)
    design = model.design(valid)
    resamples = _resamples(y, members, np.random.default_rng(seed))
    refits = model.adapter.refits(estimator, design, y, resamples)
    matrix = np.vstack([r.margin for r in refits])
    risks = np.vstack([model.calibrator.predict(m) for m in matrix])
    margin = model.margin(valid, design)
    mape = float(np.mean(np.abs(risks - model.calibrator.predict(margin))))
    log_spread = np.log(np.maximum(matrix.std(axis=0, ddof=1), 1e-6))
    form = model.adapter.spread_form(design, margin, log_spread, refits, seed)
    return BootstrapEnsemble(level=level, members=members, mape=mape, **form), risks


def mean_absolute_prediction_error(model_risk: np.ndarray, member_risks: np.ndarray) -> float:
    """Mean over patients and bootstrap models of ``|bootstrap risk - model risk|``."""
    return float(np.mean(np.abs(np.asarray(member_risks) - np.asarray(model_risk)[None, :])))


def instability_plot(model_risk: np.ndarray, member_risks: np.ndarray, title: str = ""):
    """Each bootstrap model's risk against the model's risk, per patient (a Figure).

    The dots of one patient spread vertically: the wider, the less stable that patient's
    risk. Dashed lines: the 5th and 95th centiles of the bootstrap risks' departure from the
    model's risk, pooled over the patients of each twentieth of the model risk.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model_risk = np.asarray(model_risk, dtype=float)
    member_risks = np.asarray(member_risks, dtype=float)
    figure, ax = plt.subplots(figsize=(5, 5))
    xs = np.broadcast_to(model_risk, member_risks.shape).ravel()
    ax.scatter(xs, member_risks.ravel(), s=2, alpha=0.15, color="tab:blue", rasterized=True)
    # Centiles of the bootstrap models' departures from the model, pooled over the patients of
    # each twentieth of model risk: one patient's own centiles joined in risk order zigzag.
    groups = np.array_split(np.argsort(model_risk), min(20, len(model_risk)))
    centres = np.array([np.median(model_risk[g]) for g in groups])
    for q in (5, 95):
        shift = [np.percentile(member_risks[:, g] - model_risk[g], q) for g in groups]
        ax.plot(centres, centres + np.array(shift), ls="--", color="tab:red", lw=1)
    top = float(max(model_risk.max(), member_risks.max()))
    ax.plot([0, top], [0, top], color="grey", lw=1)
    mape = mean_absolute_prediction_error(model_risk, member_risks)
    ax.set(xlabel="risk from the model", ylabel="risk from bootstrap models",
           title=title or f"Prediction instability (MAPE {mape:.3f})")
    return figure
