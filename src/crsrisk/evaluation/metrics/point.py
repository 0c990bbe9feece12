"""Metrics of predicted probabilities on all patients: point metrics, net benefit, calibration.

AUROC, AUPRC, Brier score and log loss come from scikit-learn; the calibration slope and
intercept, the expected calibration error and the threshold metrics come from the weighted
engine (`crsrisk.evaluation.metrics.weighted`) with every patient weighted once, so the
bootstrap computes exactly the same figures on each resample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from crsrisk.evaluation.metrics.inputs import (
    check_decision_thresholds,
    check_inputs,
    check_n_bins,
    check_outcomes,
    check_thresholds,
)
from crsrisk.evaluation.metrics.weighted import (
    THRESHOLD_METRICS,
    SortedData,
    quantile_bounds,
    weighted_metrics,
)

__all__ = [
    "TREAT_ALL",
    "TREAT_NONE",
    "calibration_slope_intercept",
    "calibration_table",
    "decision_curve",
    "expected_calibration_error",
    "net_benefit",
    "point_metrics",
    "threshold_metrics",
]

TREAT_ALL = "treat all"
TREAT_NONE = "treat none"
# What point_metrics takes from the weighted engine rather than from scikit-learn, in its order.
_ENGINE_ORDER = ("calibration_slope", "calibration_intercept", "ece")
_ENGINE_METRICS = frozenset(_ENGINE_ORDER)


def calibration_slope_intercept(y: ArrayLike, p: ArrayLike) -> tuple[float, float]:
    """Calibration slope and calibration-in-the-large of predicted probabilities.

    Parameters
    ----------
    y : array-like of shape (n,)
        Observed outcomes, 0 or 1.
    p : array-like of shape (n,)
        Predicted probabilities in [0, 1]; clipped to [1e-6, 1 - 1e-6] before taking logits.

    Returns
    -------
    slope : float
        Coefficient of logit(p) in an unpenalised logistic regression of y on logit(p) (1 when
        well calibrated, < 1 when predictions are too extreme). NaN when y has one class or
        logit(p) separates the classes, where no finite maximum-likelihood slope exists.
    intercept : float
        Intercept of the logistic model with logit(p) as offset and slope fixed at 1
        (calibration-in-the-large: 0 when well calibrated, > 0 when risk is underestimated).
        NaN when y has one class.
    """
    y_arr, p_arr = check_inputs(y, p)
    fitted = _on_all_patients(y_arr, p_arr, {}, which={"calibration_slope",
                                                        "calibration_intercept"})
    return fitted["calibration_slope"], fitted["calibration_intercept"]


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error over equal-frequency bins of the predictions.

    Parameters
    ----------
    y : array-like of shape (n,)
        Observed outcomes, 0 or 1.
    p : array-like of shape (n,)
        Predicted probabilities in [0, 1].
    n_bins : int, default 10
        Number of quantile bins (see the module notes: tied predictions share a bin).

    Returns
    -------
    float
        Sum over bins of (bin size / n) * |mean predicted - observed event rate|.
    """
    y_arr, p_arr = check_inputs(y, p)
    n_bins = check_n_bins(n_bins)
    return _on_all_patients(y_arr, p_arr, {}, n_bins=n_bins, which={"ece"})["ece"]


def _on_all_patients(
    y: np.ndarray, p: np.ndarray, thresholds: Mapping[str, float], *, n_bins: int = 10,
    which: set[str] | frozenset[str] | None = None,
) -> dict[str, float]:
    """The weighted metrics with every patient weighted once (checked inputs)."""
    ones = np.ones((1, y.size))
    found = weighted_metrics(SortedData.of(y, p), ones, thresholds, n_bins,
                             None if which is None else frozenset(which))
    return {name: float(values[0]) for name, values in found.items()}


def threshold_metrics(
    y: np.ndarray, p: np.ndarray, thresholds: Mapping[str, float]
) -> dict[str, float]:
    """Sensitivity, specificity, PPV and NPV at each named threshold (checked inputs)."""
    which = {f"{m}_{name}" for m in THRESHOLD_METRICS for name in thresholds}
    return _on_all_patients(y, p, thresholds, which=which) if thresholds else {}


def point_metrics(
    y: ArrayLike, p: ArrayLike, thresholds: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Discrimination, accuracy, calibration and threshold metrics of predicted probabilities.

    Parameters
    ----------
    y : array-like of shape (n,)
        Observed outcomes, 0 or 1.
    p : array-like of shape (n,)
        Predicted probabilities in [0, 1].
    thresholds : mapping of str to float, optional
        Named decision thresholds, e.g. ``{"high": 0.2, "low": 0.03}``; a patient is
        test-positive when ``p >= t``.

    Returns
    -------
    dict
        ``auroc``, ``auprc`` (average precision), ``brier``, ``log_loss``,
        ``calibration_slope``, ``calibration_intercept``, ``ece`` (10 quantile bins),
        ``prevalence``, ``n``, ``events`` (ints), and for each named threshold
        ``sensitivity_<name>``, ``specificity_<name>``, ``ppv_<name>``, ``npv_<name>``.
        AUROC, AUPRC and the calibration slope and intercept need both outcome classes and are
        NaN otherwise; threshold metrics with a zero denominator are NaN.
    """
    y_arr, p_arr = check_inputs(y, p)
    named = check_thresholds(thresholds)
    n, events = int(y_arr.size), int(y_arr.sum())
    both = 0 < events < n
    engine = _on_all_patients(y_arr, p_arr, named, which=_ENGINE_METRICS | {
        f"{m}_{name}" for m in THRESHOLD_METRICS for name in named})
    metrics: dict[str, float] = {
        "auroc": float(roc_auc_score(y_arr, p_arr)) if both else math.nan,
        "auprc": float(average_precision_score(y_arr, p_arr)) if both else math.nan,
        "brier": float(brier_score_loss(y_arr, p_arr, labels=[0, 1])),
        "log_loss": float(log_loss(y_arr, p_arr, labels=[0, 1])),
        **{name: engine[name] for name in _ENGINE_ORDER},
        "prevalence": events / n,
        "n": n,
        "events": events,
    }
    metrics.update({name: value for name, value in engine.items() if name not in metrics})
    return metrics


def _net_benefits(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    n = y.size
    order = np.argsort(p, kind="stable")
    p_s, y_s = p[order], y[order]
    events_from = np.r_[np.cumsum(y_s[::-1])[::-1], 0]  # events among positions >= k
    k = np.searchsorted(p_s, thresholds, side="left")
    tp = events_from[k]
    fp = (n - k) - tp
    return tp / n - fp / n * thresholds / (1 - thresholds)


def net_benefit(y: ArrayLike, p: ArrayLike, threshold: float) -> float:
    """Net benefit of treating patients with ``p >= threshold`` (Vickers & Elkin, 2006).

    Parameters
    ----------
    y : array-like of shape (n,)
        Observed outcomes, 0 or 1.
    p : array-like of shape (n,)
        Predicted probabilities in [0, 1].
    threshold : float
        Threshold probability in [0, 1), the risk at which treating and not treating are
        judged equally worthwhile.

    Returns
    -------
    float
        ``TP / n - FP / n * threshold / (1 - threshold)``.
    """
    y_arr, p_arr = check_inputs(y, p)
    t = check_decision_thresholds([threshold])
    return float(_net_benefits(y_arr, p_arr, t)[0])


def decision_curve(
    y: ArrayLike, predictions: Mapping[str, ArrayLike], thresholds: ArrayLike | None = None
) -> pd.DataFrame:
    """Net benefit of each prediction and of treating all or none, across thresholds.

    Parameters
    ----------
    y : array-like of shape (n,)
        Observed outcomes, 0 or 1.
    predictions : mapping of str to array-like of shape (n,)
        Predicted probabilities by strategy name (a model, a published score...).
    thresholds : float or array-like of float, optional
        Threshold probabilities in [0, 1); default 0.01 to 0.50 in steps of 0.01.

    Returns
    -------
    pandas.DataFrame
        Long format with columns ``threshold``, ``strategy``, ``net_benefit``: every named
        prediction, then ``"treat all"`` and ``"treat none"`` (net benefit 0), each over all
        thresholds.
    """
    y_arr = check_outcomes(y)
    if y_arr.size == 0:
        raise ValueError("y is empty; a decision curve needs at least one patient.")
    if not predictions:
        raise ValueError("predictions is empty; give at least one named prediction.")
    for reserved in (TREAT_ALL, TREAT_NONE):
        if reserved in predictions:
            raise ValueError(f"{reserved!r} is a reference strategy; rename that prediction.")
    t = check_decision_thresholds(thresholds)
    curves = {}
    for name, p in predictions.items():
        _, p_arr = check_inputs(y_arr, p, p_name=f"predictions[{name!r}]")
        curves[name] = _net_benefits(y_arr, p_arr, t)
    curves[TREAT_ALL] = _net_benefits(y_arr, np.ones(y_arr.size), t)
    curves[TREAT_NONE] = np.zeros(t.size)
    return pd.DataFrame({
        "threshold": np.tile(t, len(curves)),
        "strategy": pd.Series(np.repeat(list(curves), t.size), dtype="str"),
        "net_benefit": np.concatenate(list(curves.values())),
    })


def calibration_table(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Observed against predicted risk in equal-frequency bins, for calibration plots.

    Parameters
    ----------
    y : array-like of shape (n,)
        Observed outcomes, 0 or 1.
    p : array-like of shape (n,)
        Predicted probabilities in [0, 1].
    n_bins : int, default 10
        Number of quantile bins, as in :func:`expected_calibration_error`.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin, lowest risk first: ``bin`` (1, 2, ...),
        ``mean_predicted``, ``observed`` (event rate), ``n``, ``events``.
    """
    y_arr, p_arr = check_inputs(y, p)
    n_bins = check_n_bins(n_bins)
    data = SortedData.of(y_arr, p_arr)
    bounds = quantile_bounds(data.p, np.ones((1, y_arr.size)), n_bins)[0]
    rows = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        if stop > start:
            size, events = int(stop - start), int(data.y[start:stop].sum())
            rows.append({"bin": len(rows) + 1, "mean_predicted": float(data.p[start:stop].mean()),
                         "observed": events / size, "n": size, "events": events})
    return pd.DataFrame(rows)
