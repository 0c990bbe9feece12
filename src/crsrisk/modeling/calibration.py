"""Calibration, in one place: the model's log-odds margin -> a calibrated probability.

`Calibrator` is fitted at training (sigmoid or isotonic, chosen by cross-validated log loss);
`Recalibrated` composes it with a logistic recalibration (intercept and slope) fitted for a new
cohort by ``crsrisk recalibrate`` (`fit_logistic_recalibration`). Both are saved as plain data
(`to_dict` / `calibrator_from_dict`): coefficients, or the isotonic thresholds.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import interp1d
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

__all__ = [
    "PROBABILITY_FLOOR",
    "Calibrator",
    "Recalibrated",
    "calibrator_from_dict",
    "fit_logistic_recalibration",
    "logistic_recalibration",
]

PROBABILITY_FLOOR = 1e-6
METHODS = ("sigmoid", "isotonic")


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)


def _floats(values: object, what: str) -> np.ndarray:
    array = np.asarray(values, dtype="float64")
    if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"the calibrator's {what} must be a non-empty list of finite numbers")
    return array


class Calibrator:
    """Maps the model's log-odds margin to a calibrated probability (sigmoid or isotonic).

    Parameters
    ----------
    method
        ``"sigmoid"`` (Platt: a logistic regression on the margin) or ``"isotonic"``.
    """

    def __init__(self, method: str = "sigmoid") -> None:
        self.method = method

    def fit(self, margin: np.ndarray, y: np.ndarray) -> Calibrator:
        """Fit on out-of-fold margins and their outcomes; returns self."""
        margin = np.asarray(margin, dtype=float).reshape(-1, 1)
        if self.method == "sigmoid":
            fit = LogisticRegression(C=1e6, max_iter=1000).fit(margin, y)
            self.coef_ = float(fit.coef_[0, 0])
            self.intercept_ = float(fit.intercept_[0])
        elif self.method == "isotonic":
            fit = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
                margin.ravel(), y
            )
            self._set_thresholds(fit.X_thresholds_, fit.y_thresholds_)
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return self

    def _set_thresholds(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x_thresholds_ = np.asarray(x, dtype="float64")
        self.y_thresholds_ = np.asarray(y, dtype="float64")
        # The interpolation scikit-learn's IsotonicRegression.predict uses, so that a saved and
        # reloaded calibrator gives the very same bits as the fitted one.
        self._interpolate = (
            interp1d(self.x_thresholds_, self.y_thresholds_, kind="linear", bounds_error=False)
            if self.x_thresholds_.size > 1
            else None
        )

    def predict(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, clipped to [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]."""
        margin = np.asarray(margin, dtype=float)
        if self.method == "sigmoid":
            p = 1.0 / (1.0 + np.exp(-(self.intercept_ + self.coef_ * margin)))
        else:
            clipped = np.clip(margin.reshape(-1), self.x_thresholds_[0], self.x_thresholds_[-1])
            if self._interpolate is None:
                p = np.repeat(self.y_thresholds_, clipped.shape)
            else:
                p = self._interpolate(clipped).astype("float64")
        return _clip(p)

    def to_dict(self) -> dict:
        """The fitted calibrator as JSON-able data."""
        if self.method == "sigmoid":
            return {"method": "sigmoid", "coef": self.coef_, "intercept": self.intercept_}
        return {"method": "isotonic", "x_thresholds": self.x_thresholds_.tolist(),
                "y_thresholds": self.y_thresholds_.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Calibrator:
        """The calibrator `to_dict` wrote."""
        method = data.get("method")
        calibrator = cls(method)
        if method == "sigmoid":
            calibrator.coef_ = float(data["coef"])
            calibrator.intercept_ = float(data["intercept"])
            if not (np.isfinite(calibrator.coef_) and np.isfinite(calibrator.intercept_)):
                raise ValueError("the sigmoid calibrator's coefficients must be finite")
        elif method == "isotonic":
            x = _floats(data["x_thresholds"], "isotonic thresholds")
            y = _floats(data["y_thresholds"], "isotonic values")
            if x.size != y.size or np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0):
                raise ValueError("the isotonic calibrator's thresholds must increase with "
                                 "non-decreasing values of the same length")
            calibrator._set_thresholds(x, y)
        else:
            raise ValueError(f"unknown calibration method {method!r}")
        return calibrator


def logistic_recalibration(z: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    """``expit(intercept + slope * z)``, clipped as every calibrated probability."""
    return _clip(1.0 / (1.0 + np.exp(-(intercept + slope * z))))


def fit_logistic_recalibration(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of the logistic regression of ``y`` on ``z`` (a risk's logit)."""
    # C = 1e6, as the model's own calibrator: unpenalised in practice, finite under separation.
    fit = LogisticRegression(C=1e6, max_iter=1000)
    fit.fit(np.asarray(z, dtype=float).reshape(-1, 1), y)
    return float(fit.intercept_[0]), float(fit.coef_[0, 0])


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
        """The base calibrator's probabilities, recalibrated."""
        p = self.base.predict(margin)
        return logistic_recalibration(np.log(p / (1.0 - p)), self.intercept, self.slope)

    def to_dict(self) -> dict:
        """The recalibration and its base as JSON-able data."""
        return {"method": "recalibrated", "base": self.base.to_dict(),
                "intercept": self.intercept, "slope": self.slope, "cohort": self.cohort}


def calibrator_from_dict(data: dict) -> Calibrator | Recalibrated:
    """The calibrator (or recalibrated calibrator) that ``to_dict`` wrote.

    Raises
    ------
    ValueError, KeyError, TypeError
        The data is not a calibrator written by crsrisk.
    """
    if not isinstance(data, dict):
        raise TypeError("a calibrator must be a JSON object")
    if data.get("method") == "recalibrated":
        intercept, slope = float(data["intercept"]), float(data["slope"])
        if not (np.isfinite(intercept) and np.isfinite(slope)):
            raise ValueError("the recalibration's intercept and slope must be finite")
        return Recalibrated(calibrator_from_dict(data["base"]), intercept, slope,
                            str(data.get("cohort", "")))
    return Calibrator.from_dict(data)
