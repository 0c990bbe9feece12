"""Published baseline scores (m-EASIX, EASIX, CAR-HEMATOTOX) and a fitted comparator built on them.

The scores follow their publications (cited with each). Each takes a validated
baseline table (contract units) and returns one value per row, NaN where the score cannot be
computed. `ScoreComparator` turns a score into a probability with a logistic regression fitted
on the training rows only, so that a published score competes with the models on equal terms.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "LOG_SCORE_FLOOR",
    "PLATELET_FLOOR",
    "PUBLISHED_SCORES",
    "ScoreComparator",
    "car_hematotox",
    "easix",
    "log2_score",
    "m_easix",
]

# Platelets are reported to 1 x10^9/L; a reported 0 means "below 1", not an infinite score.
PLATELET_FLOOR = 1.0
# Below this the EASIX-type scores only reflect a CRP or creatinine under the assay's reporting
# limit; flooring keeps log2 finite (CRP = 0 mg/L is a valid contract value).
LOG_SCORE_FLOOR = 0.01


def _column(df: pd.DataFrame, name: str) -> np.ndarray:
    if name not in df.columns:
        raise ValueError(
            f"the published scores need column {name!r} of the baseline table; validate the "
            "table with crsrisk.contract.validate.validate first"
        )
    return df[name].to_numpy(dtype="float64", na_value=np.nan)


def _platelets(df: pd.DataFrame) -> np.ndarray:
    return np.maximum(_column(df, "platelets_1e9_l"), PLATELET_FLOOR)


def m_easix(df: pd.DataFrame) -> pd.Series:
    """Modified EASIX: LDH (U/L) x CRP (mg/dL) / platelets (x10^9/L) (Pennisi 2021).

    Parameters
    ----------
    df
        Validated baseline table; uses ``ldh_u_l``, ``crp_mg_l`` (converted to mg/dL by dividing
        by 10) and ``platelets_1e9_l``.

    Returns
    -------
    pd.Series
        float64, index of ``df``; NaN where any component is missing. Platelets below 1 x10^9/L
        (including a reported 0) count as 1, so the score stays finite and very high.
    """
    crp_mg_dl = _column(df, "crp_mg_l") / 10.0
    value = _column(df, "ldh_u_l") * crp_mg_dl / _platelets(df)
    return pd.Series(value, index=df.index, name="m_easix", dtype="float64")


def easix(df: pd.DataFrame) -> pd.Series:
    """EASIX: LDH (U/L) x creatinine (mg/dL) / platelets (x10^9/L) (Korell 2022).

    Parameters
    ----------
    df
        Validated baseline table; uses ``ldh_u_l``, ``creatinine_mg_dl`` and ``platelets_1e9_l``.

    Returns
    -------
    pd.Series
        float64, index of ``df``; NaN where any component is missing. Platelets below 1 x10^9/L
        count as 1, as in `m_easix`.
    """
    value = _column(df, "ldh_u_l") * _column(df, "creatinine_mg_dl") / _platelets(df)
    return pd.Series(value, index=df.index, name="easix", dtype="float64")


def car_hematotox(df: pd.DataFrame) -> pd.Series:
    """CAR-HEMATOTOX points (Rejeski 2021), 0 to 7; 2 or more is "high".

    The score was built to predict haematotoxicity after CAR-T, not CRS: it is a comparator
    expected to be weak. Its point thresholds are marked "(unverified)": recalled, not
    read from the paper:

    - platelets (x10^9/L): > 175 = 0, 75 to 175 = 1, < 75 = 2
    - ANC (x10^9/L): < 1.2 = 1
    - haemoglobin (g/dL): < 9 = 1
    - CRP (mg/L): >= 30 = 1
    - ferritin (ng/mL): 650 to 2000 = 1, > 2000 = 2

    Parameters
    ----------
    df
        Validated baseline table; uses ``platelets_1e9_l``, ``anc_1e9_l``, ``hemoglobin_g_dl``,
        ``crp_mg_l`` and ``ferritin_ng_ml``.

    Returns
    -------
    pd.Series
        float64 points, index of ``df``. NaN when any of the five components is missing: the
        published score is defined only on all five, and counting a missing lab as 0 points
        would quietly call it normal.
    """
    platelets = _column(df, "platelets_1e9_l")
    anc = _column(df, "anc_1e9_l")
    hb = _column(df, "hemoglobin_g_dl")
    crp = _column(df, "crp_mg_l")
    ferritin = _column(df, "ferritin_ng_ml")
    points = (
        (platelets <= 175).astype("float64")
        + (platelets < 75)
        + (anc < 1.2)
        + (hb < 9)
        + (crp >= 30)
        + (ferritin >= 650)
        + (ferritin > 2000)
    )
    missing = np.isnan(platelets) | np.isnan(anc) | np.isnan(hb) | np.isnan(crp)
    points[missing | np.isnan(ferritin)] = np.nan
    return pd.Series(points, index=df.index, name="car_hematotox", dtype="float64")


PUBLISHED_SCORES: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "m_easix": m_easix,
    "easix": easix,
    "car_hematotox": car_hematotox,
}
# Continuous ratio scores are modelled per doubling (as published); points are used as they are.
LOG2_SCORES = frozenset({"m_easix", "easix"})


def log2_score(values: pd.Series | np.ndarray) -> np.ndarray:
    """log2 of an EASIX-type score, floored at `LOG_SCORE_FLOOR`; NaN stays NaN."""
    values = np.asarray(values, dtype="float64")
    return np.log2(np.maximum(values, LOG_SCORE_FLOOR))


class ScoreComparator(ClassifierMixin, BaseEstimator):
    """A published score as a classifier: score -> transform -> logistic regression.

    The score is computed from the validated baseline table, log2-transformed for m-EASIX and
    EASIX (per doubling, as published) and used as points for CAR-HEMATOTOX. A missing score is
    imputed with the training median, with a missing-indicator column when the training rows
    had missing scores. A logistic regression (effectively unpenalised) is fitted on the
    training rows only.

    Parameters
    ----------
    score
        One of the keys of `PUBLISHED_SCORES`: ``"m_easix"``, ``"easix"``, ``"car_hematotox"``.

    Attributes
    ----------
    classes_ : ndarray
        The class labels seen at fit.
    median_ : float
        Training median of the transformed score, used for missing scores.
    has_indicator_ : bool
        Whether a missing-indicator column is part of the model.
    coef_, intercept_ : ndarray
        Of the logistic regression, on the internal scaled inputs.

    Notes
    -----
    The parameter name ``score`` shadows `ClassifierMixin.score` (accuracy) on instances: use
    an explicit scorer (``scoring=...``) in scikit-learn utilities.
    """

    def __init__(self, score: str = "m_easix") -> None:
        self.score = score

    def _transformed(self, X: pd.DataFrame) -> np.ndarray:
        if self.score not in PUBLISHED_SCORES:
            raise ValueError(
                f"unknown score {self.score!r}: choose one of {', '.join(PUBLISHED_SCORES)}"
            )
        values = PUBLISHED_SCORES[self.score](X).to_numpy(dtype="float64")
        return log2_score(values) if self.score in LOG2_SCORES else values

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        values = self._transformed(X)
        missing = np.isnan(values)
        filled = np.where(missing, self.median_, values)
        columns = [(filled - self.center_) / self.scale_]
        if self.has_indicator_:
            columns.append(missing.astype("float64"))
        return np.column_stack(columns)

    def fit(self, X: pd.DataFrame, y: pd.Series | np.ndarray) -> ScoreComparator:
        """Fit the logistic regression of ``y`` on the score of the rows of ``X``.

        Parameters
        ----------
        X
            Validated baseline table (training rows only).
        y
            Binary outcome, one per row of ``X``.

        Returns
        -------
        ScoreComparator
            self, fitted.
        """
        values = self._transformed(X)
        observed = values[~np.isnan(values)]
        if observed.size == 0:
            raise ValueError(
                f"the {self.score} score is missing for every training row: supply its "
                "components or leave this comparator out"
            )
        self.median_ = float(np.median(observed))
        self.center_ = float(observed.mean())
        spread = float(observed.std())
        # Scaling only conditions the solver; the fitted probabilities do not depend on it.
        self.scale_ = spread if spread > 1e-12 else 1.0
        self.has_indicator_ = bool(observed.size < values.size)
        # C = 1e6 is a plain logistic regression in practice, yet stays finite when a small
        # cross-validation fold happens to be separable by the score.
        self.model_ = LogisticRegression(C=1e6, max_iter=1000)
        self.model_.fit(self._design(X), np.asarray(y))
        self.classes_ = self.model_.classes_
        self.coef_ = self.model_.coef_
        self.intercept_ = self.model_.intercept_
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Log-odds of the positive class (``classes_[1]``) for each row of ``X``."""
        check_is_fitted(self, "model_")
        # Computed directly rather than by the inner model, which refuses zero rows.
        return self._design(X) @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probabilities, shape (n_rows, 2), columns in the order of ``classes_``."""
        positive = expit(self.decision_function(X))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The more probable class of each row."""
        return self.classes_[(self.decision_function(X) > 0).astype(int)]
