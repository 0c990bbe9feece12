"""Performance of predicted probabilities of severe CRS: discrimination, calibration, utility.

Pure functions of outcomes ``y`` (0/1) and predicted probabilities ``p``: point metrics,
percentile-bootstrap intervals, net benefit and decision curves, calibration tables and
subgroup tables, as reported under TRIPOD+AI. No I/O, no tracking, no plotting.

Conventions shared by every function:

- ``y``, ``p`` may be lists, numpy arrays or pandas Series (nullable dtypes included); they are
  matched by position, never by index.
- A patient is test-positive at threshold ``t`` when ``p >= t``.
- A metric that is undefined on the data given (AUROC with one outcome class, PPV with no
  test-positives, ...) is NaN, never an exception.
- Expected calibration error and calibration tables use equal-frequency bins: the bin edges are
  the ``k / n_bins`` quantiles of ``p`` (linear interpolation, as ``numpy.quantile``), each bin is
  right-closed, and tied predictions always share a bin, so bins can be unequal or empty when
  ``p`` has ties. Quantile bins keep every bin populated when predictions crowd near the low
  prevalence of severe CRS, where equal-width bins leave most bins empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import brentq
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

__all__ = [
    "age_band",
    "bootstrap_metrics",
    "calibration_slope_intercept",
    "calibration_table",
    "decision_curve",
    "expected_calibration_error",
    "net_benefit",
    "point_metrics",
    "subgroup_table",
]

CALIBRATION_CLIP = 1e-6
AGE_BANDS = ("<40", "40-59", "60-69", "70+")
THRESHOLD_METRICS = ("sensitivity", "specificity", "ppv", "npv")
DECISION_THRESHOLDS = np.round(np.arange(1, 51) / 100, 2)
TREAT_ALL = "treat all"
TREAT_NONE = "treat none"
# Bootstrap resamples are processed in blocks of at most this many cells (resamples x patients)
# so memory stays bounded for large cohorts.
_BLOCK_CELLS = 2_000_000


# --------------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------------


def _to_vector(values: Any, name: str) -> np.ndarray:
    """``values`` as a one-dimensional float array with NaN for missing entries."""
    try:
        if isinstance(values, pd.Series | pd.Index | pd.api.extensions.ExtensionArray):
            array = values.to_numpy(dtype=float, na_value=np.nan)
        else:
            array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric; it could not be read as numbers ({exc}).") \
            from exc
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got an array of shape {array.shape}.")
    return array


def _check_outcomes(y: ArrayLike, name: str = "y") -> np.ndarray:
    """``y`` as an int64 array of 0/1, or a ValueError naming the first bad value."""
    values = _to_vector(y, name)
    missing = np.flatnonzero(np.isnan(values))
    if missing.size:
        raise ValueError(
            f"{name} has {missing.size} missing value(s), the first at position {missing[0]}; "
            "outcomes must be 0 or 1 for every patient.")
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        raise ValueError(
            f"{name} must be 0 or 1; found {values[bad[0]]:g} at position {bad[0]} "
            f"({bad.size} value(s) in all).")
    return values.astype(np.int64)


def _check_probabilities(p: ArrayLike, name: str = "p") -> np.ndarray:
    """``p`` as a float64 array in [0, 1], or a ValueError naming the first bad value."""
    values = _to_vector(p, name)
    missing = np.flatnonzero(np.isnan(values))
    if missing.size:
        raise ValueError(
            f"{name} has {missing.size} missing value(s) (NaN), the first at position "
            f"{missing[0]}; every patient needs a predicted probability.")
    bad = np.flatnonzero((values < 0) | (values > 1))
    if bad.size:
        raise ValueError(
            f"{name} must lie in [0, 1]; found {values[bad[0]]:g} at position {bad[0]} "
            f"({bad.size} value(s) in all).")
    return values


def _check_inputs(y: ArrayLike, p: ArrayLike, p_name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    y_arr = _check_outcomes(y)
    p_arr = _check_probabilities(p, p_name)
    if y_arr.size != p_arr.size:
        raise ValueError(
            f"y has {y_arr.size} values but {p_name} has {p_arr.size}; they must describe the "
            "same patients in the same order.")
    if y_arr.size == 0:
        raise ValueError("y and p are empty; metrics need at least one patient.")
    return y_arr, p_arr


def _check_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    if thresholds is None:
        return {}
    checked = {}
    for name, value in thresholds.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"threshold names must be non-empty strings; got {name!r}.")
        try:
            t = float(value)
        except (TypeError, ValueError):
            t = math.nan
        if not 0 <= t <= 1:
            raise ValueError(f"threshold {name!r} must lie in [0, 1]; got {value!r}.")
        checked[name] = t
    return checked


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}.")
    return int(n_bins)


def _check_decision_thresholds(thresholds: ArrayLike | None) -> np.ndarray:
    if thresholds is None:
        return DECISION_THRESHOLDS
    if np.ndim(thresholds) == 0:
        thresholds = [thresholds]
    t = _to_vector(thresholds, "thresholds")
    if not t.size:
        raise ValueError("thresholds is empty; give at least one threshold probability.")
    bad = np.flatnonzero(~((t >= 0) & (t < 1)))
    if bad.size:
        raise ValueError(
            f"decision thresholds must lie in [0, 1); found {t[bad[0]]:g} at position {bad[0]} "
            "(net benefit weighs false positives by t / (1 - t)).")
    return t


# --------------------------------------------------------------------------------------------
# Weighted metric engine: one row of weights per (re)sample
# --------------------------------------------------------------------------------------------
# A bootstrap resample is the original patients with integer multiplicities, so every metric
# of a resample is a weighted metric of the original data sorted once. Rows of ``weights`` are
# resamples; all-ones is the data itself.


@dataclass(frozen=True)
class _Sorted:
    p: np.ndarray  # ascending
    y: np.ndarray  # float 0/1, same order
    x: np.ndarray  # logit of p clipped to [CALIBRATION_CLIP, 1 - CALIBRATION_CLIP]
    starts: np.ndarray  # first position of each distinct value of p
    order: np.ndarray  # positions in the caller's order

    @classmethod
    def of(cls, y: np.ndarray, p: np.ndarray) -> _Sorted:
        order = np.argsort(p, kind="stable")
        p_s = p[order]
        starts = np.flatnonzero(np.r_[True, p_s[1:] != p_s[:-1]])
        x = logit(np.clip(p_s, CALIBRATION_CLIP, 1 - CALIBRATION_CLIP))
        return cls(p_s, y[order].astype(float), x, starts, order)


def _rowwise_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _quantile_bounds(p_sorted: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Per row, the positions in ``p_sorted`` where the equal-frequency bins start and end.

    Shape (rows, n_bins + 1); bin k holds positions ``bounds[k]:bounds[k + 1]``.
    """
    rows, n = weights.shape
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1:]
    q = np.arange(1, n_bins) / n_bins
    h = (total - 1) * q
    lo = np.floor(h)
    frac = h - lo
    hi = np.minimum(lo + 1, total - 1)
    # Position j of the resampled, sorted sample is the first original position whose
    # cumulative weight exceeds j; offsetting each row lets one searchsorted serve all rows.
    span = float(total.max()) + 1
    offset = np.arange(rows)[:, None] * span
    flat = (cum + offset).ravel()

    def value_at(position: np.ndarray) -> np.ndarray:
        found = np.searchsorted(flat, (position + offset).ravel(), side="right")
        return p_sorted[found.reshape(position.shape) - np.arange(rows)[:, None] * n]

    low, high = value_at(lo), value_at(hi)
    edges = low + frac * (high - low)
    inner = np.searchsorted(p_sorted, edges.ravel(), side="right").reshape(edges.shape)
    inner = np.maximum.accumulate(inner, axis=1) if n_bins > 1 else inner
    return np.hstack([np.zeros((rows, 1), dtype=np.intp), inner, np.full((rows, 1), n)])


def _prefix(values: np.ndarray) -> np.ndarray:
    """Cumulative sums along rows with a leading zero column."""
    out = np.zeros((values.shape[0], values.shape[1] + 1))
    np.cumsum(values, axis=1, out=out[:, 1:])
    return out


def _offset_intercepts(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Intercept of the weighted logistic model with offset ``x``; rows need both classes."""
    rows = weights.shape[0]
    events = weights @ y
    base = logit(events / weights.sum(axis=1))
    # The score is decreasing in the intercept and changes sign on this interval.
    lo, hi = base - x.max(), base - x.min()
    a = np.clip(0.0, lo, hi)
    active = np.arange(rows)
    for _ in range(200):
        w = weights[active]
        mu = expit(a[active, None] + x)
        score = events[active] - _rowwise_dot(w, mu)
        info = _rowwise_dot(w, mu * (1 - mu))
        lo[active] = np.where(score > 0, a[active], lo[active])
        hi[active] = np.where(score < 0, a[active], hi[active])
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = a[active] + score / info
        inside = np.isfinite(newton) & (newton >= lo[active]) & (newton <= hi[active])
        new = np.where(inside, newton, 0.5 * (lo[active] + hi[active]))
        # Newton converges quadratically: after a step below 1e-7 the error is ~1e-14.
        change = np.abs(new - a[active])
        scale = np.maximum(1, np.abs(new))
        done = ((inside & (change <= 1e-7 * scale)) | (change <= 1e-13 * scale)
                | (score == 0))
        a[active] = new
        active = active[~done]
        if not active.size:
            break
    a[active] = np.nan
    return a


def _logistic_slopes(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Slope of the weighted logistic regression of y on x; rows must not be separated."""
    rows = weights.shape[0]
    x2 = x * x
    sign = 2 * y - 1

    def fitted(a: np.ndarray, s: np.ndarray) -> np.ndarray:
        # Probability given to the observed outcome: one expit serves the log-likelihood, the
        # score (y - mu = sign * (1 - q)) and the information (mu * (1 - mu) = q * (1 - q)).
        eta = np.multiply.outer(s, x)
        eta += a[:, None]
        eta *= sign
        return expit(eta, out=eta)

    def loglik(w: np.ndarray, q: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return _rowwise_dot(w, np.log(q))

    a, s = np.zeros(rows), np.ones(rows)  # start at perfect calibration
    q = fitted(a, s)
    ll = loglik(weights, q)
    active = np.arange(rows)
    for _ in range(100):
        w = weights[active]
        wr = w * (sign * (1 - q))
        wv = w * (q * (1 - q))
        g0, g1 = wr.sum(axis=1), wr @ x
        h00, h01, h11 = wv.sum(axis=1), wv @ x, wv @ x2
        det = h00 * h11 - h01 * h01
        with np.errstate(divide="ignore", invalid="ignore"):
            da = (h11 * g0 - h01 * g1) / det
            ds = (h00 * g1 - h01 * g0) / det
        finite = np.isfinite(da) & np.isfinite(ds)
        da, ds = np.where(finite, da, 0.0), np.where(finite, ds, 0.0)
        step = np.ones(active.size)
        ll_old = ll[active]
        q_new = fitted(a[active] + da, s[active] + ds)
        ll_new = loglik(w, q_new)
        tolerance = 1e-12 * (1 + np.abs(ll_old))
        worse = ~(ll_new >= ll_old - tolerance)
        for _ in range(40):  # step halving keeps Newton ascending far from the optimum
            if not worse.any():
                break
            step[worse] *= 0.5
            idx = np.flatnonzero(worse)
            q_new[idx] = fitted(a[active[idx]] + step[idx] * da[idx],
                                s[active[idx]] + step[idx] * ds[idx])
            ll_new[idx] = loglik(w[idx], q_new[idx])
            worse = ~(ll_new >= ll_old - tolerance)
        ok = finite & ~worse
        a[active] = np.where(ok, a[active] + step * da, a[active])
        s[active] = np.where(ok, s[active] + step * ds, s[active])
        ll[active] = np.where(ok, ll_new, ll_old)
        size = np.maximum(np.abs(step * da), np.abs(step * ds))
        # Newton converges quadratically: after a full step below 1e-7 the error is ~1e-14.
        scale = np.maximum(1, np.abs(s[active]))
        done = ok & (((step == 1) & (size <= 1e-7 * scale)) | (size <= 1e-13 * scale))
        failed = ~ok
        s[active[failed]] = np.nan
        keep = ~(done | failed)
        active = active[keep]
        q = q_new[keep]
        if not active.size:
            break
    s[active] = np.nan
    return s


def _overlapping(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rows whose weighted data are not (quasi-)separated by x, so the slope MLE exists."""
    present = weights > 0
    pos = present & (y == 1)
    neg = present & (y == 0)
    min_pos = np.where(pos, x, np.inf).min(axis=1)
    max_pos = np.where(pos, x, -np.inf).max(axis=1)
    min_neg = np.where(neg, x, np.inf).min(axis=1)
    max_neg = np.where(neg, x, -np.inf).max(axis=1)
    return (min_pos < max_neg) & (min_neg < max_pos)


def _weighted_metrics(
    data: _Sorted,
    weights: np.ndarray,
    thresholds: Mapping[str, float],
    n_bins: int = 10,
    which: frozenset[str] | None = None,
) -> dict[str, np.ndarray]:
    """Metrics of each row of ``weights`` (aligned to ``data``); NaN where undefined."""

    def wanted(*names: str) -> bool:
        return which is None or any(name in which for name in names)

    y, p = data.y, data.p
    total = weights.sum(axis=1)
    events = weights @ y
    non_events = total - events
    both = (events > 0) & (non_events > 0)
    out: dict[str, np.ndarray] = {}

    if wanted("auroc", "auprc"):
        # Tied predictions form one group; the resampled curves step once per group.
        if data.starts.size == y.size:
            pos_g = weights * y
            neg_g = weights - pos_g
        else:
            ends = np.r_[data.starts, y.size]
            pos_g = np.diff(_prefix(weights * y)[:, ends], axis=1)
            neg_g = np.diff(_prefix(weights)[:, ends], axis=1) - pos_g
        pos_cum, neg_cum = np.cumsum(pos_g, axis=1), np.cumsum(neg_g, axis=1)
        out["auroc"] = np.where(
            both, _safe_ratio(_rowwise_dot(pos_g, neg_cum - 0.5 * neg_g), events * non_events),
            np.nan)
        # Counted from the highest prediction down to and including each group.
        tp = events[:, None] - pos_cum + pos_g
        fp = non_events[:, None] - neg_cum + neg_g
        precision = np.zeros_like(tp)
        np.divide(tp, tp + fp, out=precision, where=(tp + fp) > 0)
        out["auprc"] = np.where(both, _safe_ratio(_rowwise_dot(pos_g, precision), events), np.nan)
    if wanted("brier"):
        out["brier"] = weights @ (p - y) ** 2 / total
    if wanted("log_loss"):
        eps = np.finfo(float).eps  # the clip scikit-learn's log_loss applies
        q = np.clip(p, eps, 1 - eps)
        out["log_loss"] = weights @ -(y * np.log(q) + (1 - y) * np.log1p(-q)) / total
    if wanted("calibration_slope", "calibration_intercept"):
        slope = np.full(weights.shape[0], np.nan)
        intercept = np.full(weights.shape[0], np.nan)
        if both.any():
            intercept[both] = _offset_intercepts(data.x, y, weights[both])
        fit = both & _overlapping(data.x, y, weights)
        if fit.any():
            slope[fit] = _logistic_slopes(data.x, y, weights[fit])
        out["calibration_slope"] = slope
        out["calibration_intercept"] = intercept
    if wanted("ece"):
        bounds = _quantile_bounds(p, weights, n_bins)
        gap = _prefix(weights * (p - y))
        per_bin = np.diff(np.take_along_axis(gap, bounds, axis=1), axis=1)
        out["ece"] = np.abs(per_bin).sum(axis=1) / total
    if wanted("prevalence"):
        out["prevalence"] = events / total
    if thresholds and wanted(*(f"{m}_{name}" for m in THRESHOLD_METRICS for name in thresholds)):
        cum_w, cum_wy = _prefix(weights), _prefix(weights * y)
        for name, t in thresholds.items():
            k = int(np.searchsorted(p, t, side="left"))  # positions >= k are test-positive
            tp = events - cum_wy[:, k]
            test_pos = total - cum_w[:, k]
            fp = test_pos - tp
            tn = non_events - fp
            out[f"sensitivity_{name}"] = _safe_ratio(tp, events)
            out[f"specificity_{name}"] = _safe_ratio(tn, non_events)
            out[f"ppv_{name}"] = _safe_ratio(tp, test_pos)
            out[f"npv_{name}"] = _safe_ratio(tn, total - test_pos)
    return out


# --------------------------------------------------------------------------------------------
# Point metrics
# --------------------------------------------------------------------------------------------


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
    y_arr, p_arr = _check_inputs(y, p)
    x = logit(np.clip(p_arr, CALIBRATION_CLIP, 1 - CALIBRATION_CLIP))
    events = int(y_arr.sum())
    if events == 0 or events == y_arr.size:
        return math.nan, math.nan

    base = logit(events / y_arr.size)
    lo, hi = base - x.max(), base - x.min()
    if lo == hi:
        intercept = float(lo)
    else:
        def score(a: float) -> float:
            return events - float(expit(a + x).sum())

        intercept = float(brentq(score, lo, hi, xtol=1e-13, rtol=4 * np.finfo(float).eps))

    weights = np.ones((1, y_arr.size))
    if not _overlapping(x, y_arr, weights)[0]:
        return math.nan, intercept
    model = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=200)
    model.fit(x[:, None], y_arr)
    return float(model.coef_[0, 0]), intercept


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
    y_arr, p_arr = _check_inputs(y, p)
    n_bins = _check_n_bins(n_bins)
    data = _Sorted.of(y_arr, p_arr)
    ones = np.ones((1, y_arr.size))
    return float(_weighted_metrics(data, ones, {}, n_bins, frozenset({"ece"}))["ece"][0])


def _threshold_metrics(y: np.ndarray, p: np.ndarray, name: str, t: float) -> dict[str, float]:
    positive = p >= t
    tp = float(np.sum(positive & (y == 1)))
    fp = float(np.sum(positive & (y == 0)))
    fn = float(np.sum(~positive & (y == 1)))
    tn = float(np.sum(~positive & (y == 0)))

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else math.nan

    return {
        f"sensitivity_{name}": ratio(tp, tp + fn),
        f"specificity_{name}": ratio(tn, tn + fp),
        f"ppv_{name}": ratio(tp, tp + fp),
        f"npv_{name}": ratio(tn, tn + fn),
    }


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
    y_arr, p_arr = _check_inputs(y, p)
    named = _check_thresholds(thresholds)
    n, events = int(y_arr.size), int(y_arr.sum())
    both = 0 < events < n
    slope, intercept = calibration_slope_intercept(y_arr, p_arr)
    metrics: dict[str, float] = {
        "auroc": float(roc_auc_score(y_arr, p_arr)) if both else math.nan,
        "auprc": float(average_precision_score(y_arr, p_arr)) if both else math.nan,
        "brier": float(brier_score_loss(y_arr, p_arr, labels=[0, 1])),
        "log_loss": float(log_loss(y_arr, p_arr, labels=[0, 1])),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        "ece": expected_calibration_error(y_arr, p_arr),
        "prevalence": events / n,
        "n": n,
        "events": events,
    }
    for name, t in named.items():
        metrics.update(_threshold_metrics(y_arr, p_arr, name, t))
    return metrics


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


def _resample_blocks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Seeded bootstrap resamples (rows of patient positions), in memory-bounded blocks."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, n_boot, block):
        yield rng.integers(0, n, size=(min(block, n_boot - start), n))


def _bootstrap_replicates(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: Mapping[str, float],
    n_boot: int,
    seed: int,
    which: frozenset[str] | None = None,
) -> dict[str, np.ndarray]:
    """Each metric on each of ``n_boot`` resamples of the patients (NaN where undefined)."""
    data = _Sorted.of(y, p)
    rank = np.empty(y.size, dtype=np.intp)
    rank[data.order] = np.arange(y.size)  # caller position -> sorted position
    parts: list[dict[str, np.ndarray]] = []
    for indices in _resample_blocks(y.size, n_boot, seed):
        rows = indices.shape[0]
        flat = (rank[indices] + np.arange(rows)[:, None] * y.size).ravel()
        counts = np.bincount(flat, minlength=rows * y.size).reshape(rows, y.size)
        parts.append(_weighted_metrics(data, counts.astype(float), thresholds, 10, which))
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float, int]:
    valid = values[np.isfinite(values)]
    if not valid.size:
        return math.nan, math.nan, 0
    alpha = 100 * (1 - level) / 2
    lower, upper = np.percentile(valid, [alpha, 100 - alpha])
    return float(lower), float(upper), int(valid.size)


def _check_bootstrap(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}.")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level!r}.")


def bootstrap_metrics(
    y: ArrayLike,
    p: ArrayLike,
    thresholds: Mapping[str, float] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Point metrics with percentile-bootstrap confidence intervals.

    Patients are resampled with replacement; a resample on which a metric is undefined (for
    example AUROC on a resample with one outcome class) is left out of that metric's interval.

    Parameters
    ----------
    y : array-like of shape (n,)
        Observed outcomes, 0 or 1.
    p : array-like of shape (n,)
        Predicted probabilities in [0, 1].
    thresholds : mapping of str to float, optional
        Named decision thresholds, as in :func:`point_metrics`.
    n_boot : int, default 1000
        Number of bootstrap resamples.
    seed : int, default 0
        Seed of the resampling; the same seed gives the same intervals.
    level : float, default 0.95
        Coverage of the intervals.

    Returns
    -------
    pandas.DataFrame
        One row per metric of :func:`point_metrics` except ``n`` and ``events``, with columns
        ``metric``, ``estimate`` (on all patients), ``lower``, ``upper`` and ``n_resamples``
        (the resamples on which the metric was defined; intervals are NaN when none was).
    """
    y_arr, p_arr = _check_inputs(y, p)
    named = _check_thresholds(thresholds)
    _check_bootstrap(n_boot, level)
    estimates = point_metrics(y_arr, p_arr, named)
    replicates = _bootstrap_replicates(y_arr, p_arr, named, n_boot, seed)
    rows = []
    for metric, estimate in estimates.items():
        if metric in ("n", "events"):
            continue
        lower, upper, used = _percentile_interval(replicates[metric], level)
        rows.append({"metric": metric, "estimate": float(estimate), "lower": lower,
                     "upper": upper, "n_resamples": used})
    return pd.DataFrame(rows).astype({"metric": "str"})


# --------------------------------------------------------------------------------------------
# Clinical utility
# --------------------------------------------------------------------------------------------


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
    y_arr, p_arr = _check_inputs(y, p)
    t = _check_decision_thresholds([threshold])
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
    y_arr = _check_outcomes(y)
    if y_arr.size == 0:
        raise ValueError("y is empty; a decision curve needs at least one patient.")
    if not predictions:
        raise ValueError("predictions is empty; give at least one named prediction.")
    for reserved in (TREAT_ALL, TREAT_NONE):
        if reserved in predictions:
            raise ValueError(f"{reserved!r} is a reference strategy; rename that prediction.")
    t = _check_decision_thresholds(thresholds)
    curves = {}
    for name, p in predictions.items():
        _, p_arr = _check_inputs(y_arr, p, p_name=f"predictions[{name!r}]")
        curves[name] = _net_benefits(y_arr, p_arr, t)
    curves[TREAT_ALL] = _net_benefits(y_arr, np.ones(y_arr.size), t)
    curves[TREAT_NONE] = np.zeros(t.size)
    return pd.DataFrame({
        "threshold": np.tile(t, len(curves)),
        "strategy": pd.Series(np.repeat(list(curves), t.size), dtype="str"),
        "net_benefit": np.concatenate(list(curves.values())),
    })


# --------------------------------------------------------------------------------------------
# Calibration table and subgroups
# --------------------------------------------------------------------------------------------


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
    y_arr, p_arr = _check_inputs(y, p)
    n_bins = _check_n_bins(n_bins)
    data = _Sorted.of(y_arr, p_arr)
    bounds = _quantile_bounds(data.p, np.ones((1, y_arr.size)), n_bins)[0]
    rows = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        if stop > start:
            size, events = int(stop - start), int(data.y[start:stop].sum())
            rows.append({"bin": len(rows) + 1, "mean_predicted": float(data.p[start:stop].mean()),
                         "observed": events / size, "n": size, "events": events})
    return pd.DataFrame(rows)


def age_band(age_years: ArrayLike) -> pd.Series:
    """Age in years as the bands ``<40``, ``40-59``, ``60-69``, ``70+`` for subgroup tables.

    Parameters
    ----------
    age_years : array-like or pandas.Series
        Ages in years; missing ages stay missing (NaN).

    Returns
    -------
    pandas.Series
        Ordered categorical named ``age_band``, with the index of ``age_years`` when it is a
        Series.
    """
    index = age_years.index if isinstance(age_years, pd.Series) else None
    ages = _to_vector(age_years, "age_years")
    negative = np.flatnonzero(ages < 0)
    if negative.size:
        raise ValueError(
            f"age_years must not be negative; found {ages[negative[0]]:g} at position "
            f"{negative[0]}.")
    bands = pd.cut(ages, [0, 40, 60, 70, np.inf], right=False, labels=list(AGE_BANDS))
    return pd.Series(bands, index=index, name="age_band")


def _levels(values: pd.Series) -> list[Any]:
    present = values.dropna()
    if isinstance(values.dtype, pd.CategoricalDtype):
        observed = set(present.unique())
        return [c for c in values.cat.categories if c in observed]
    unique = list(pd.unique(present))
    try:
        return sorted(unique)
    except TypeError:  # mixed types: keep the order of appearance
        return unique


def _label(level: Any) -> str:
    # An ECOG of 1 read as a float column should read "1", not "1.0".
    if isinstance(level, float) and level.is_integer():
        return str(int(level))
    return str(level)


def subgroup_table(
    frame: pd.DataFrame,
    y: ArrayLike,
    p: ArrayLike,
    by: Sequence[str],
    *,
    thresholds: Mapping[str, float] | None = None,
    min_events: int = 10,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Performance within each level of each grouping column, for fairness and transportability.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient table holding the ``by`` columns, row-aligned with ``y`` and ``p`` by position.
        Pass numeric age as a band column (see :func:`age_band`).
    y : array-like of shape (n,)
        Observed outcomes, 0 or 1.
    p : array-like of shape (n,)
        Predicted probabilities in [0, 1].
    by : sequence of str
        Columns of ``frame`` to split by, one at a time. Levels follow the category order (or
        sorted values); levels without patients are left out; missing values form a last level
        named ``"missing"``.
    thresholds : mapping of str to float, optional
        Named decision thresholds; adds sensitivity, specificity, PPV and NPV per level.
    min_events : int, default 10
        Levels with fewer events or fewer non-events than this are flagged ``too_few_events``
        and get no AUROC or interval.
    n_boot : int, default 200
        Bootstrap resamples for the AUROC interval of each level.
    seed : int, default 0
        Seed of the resampling.

    Returns
    -------
    pandas.DataFrame
        One row per (variable, level) with columns ``variable``, ``level``, ``n``, ``events``,
        ``prevalence``, ``auroc``, ``auroc_lower``, ``auroc_upper`` (95% percentile bootstrap),
        ``calibration_intercept``, ``brier``, ``mean_predicted``, ``observed`` (the event rate,
        next to ``mean_predicted`` for observed-versus-expected reading), ``too_few_events``,
        and the threshold metrics when ``thresholds`` is given.
    """
    y_arr, p_arr = _check_inputs(y, p)
    named = _check_thresholds(thresholds)
    _check_bootstrap(n_boot, 0.95)
    if len(frame) != y_arr.size:
        raise ValueError(
            f"frame has {len(frame)} rows but y and p have {y_arr.size}; they must describe the "
            "same patients in the same order.")
    if isinstance(by, str):
        by = [by]
    absent = [column for column in by if column not in frame.columns]
    if absent:
        raise ValueError(f"frame has no column(s) {absent}; subgroups need them.")

    rows = []
    for variable in by:
        values = frame[variable].reset_index(drop=True)
        missing = values.isna().to_numpy()
        groups = [(_label(level), (values == level).to_numpy(dtype=bool, na_value=False))
                  for level in _levels(values)]
        if missing.any():
            groups.append(("missing", missing))
        for level, mask in groups:
            y_g, p_g = y_arr[mask], p_arr[mask]
            n, events = int(y_g.size), int(y_g.sum())
            flagged = events < min_events or n - events < min_events
            auroc = lower = upper = math.nan
            if not flagged:
                auroc = float(roc_auc_score(y_g, p_g))
                replicates = _bootstrap_replicates(
                    y_g, p_g, {}, n_boot, seed + len(rows), frozenset({"auroc"}))
                lower, upper, _ = _percentile_interval(replicates["auroc"], 0.95)
            row = {
                "variable": variable, "level": level, "n": n, "events": events,
                "prevalence": events / n, "auroc": auroc, "auroc_lower": lower,
                "auroc_upper": upper,
                "calibration_intercept": calibration_slope_intercept(y_g, p_g)[1],
                "brier": float(brier_score_loss(y_g, p_g, labels=[0, 1])),
                "mean_predicted": float(p_g.mean()), "observed": events / n,
                "too_few_events": flagged,
            }
            for name, t in named.items():
                row.update(_threshold_metrics(y_g, p_g, name, t))
            rows.append(row)
    columns = ["variable", "level", "n", "events", "prevalence", "auroc", "auroc_lower",
               "auroc_upper", "calibration_intercept", "brier", "mean_predicted", "observed",
               "too_few_events"]
    columns += [f"{m}_{name}" for name in named for m in THRESHOLD_METRICS]
    return pd.DataFrame(rows, columns=columns).astype(
        {"variable": "str", "level": "str", "too_few_events": "bool"})
