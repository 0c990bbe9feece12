"""The metrics of weighted patients, vectorised over many weightings at once.

A bootstrap resample is the original patients with integer multiplicities, so every metric of a
resample is a weighted metric of the original data sorted once. Rows of ``weights`` are
weightings (resamples); a row of ones is the data itself, which is how the point metrics use the
same code for the calibration slope and intercept, the expected calibration error and the
threshold metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

__all__ = [
    "CALIBRATION_CLIP",
    "THRESHOLD_METRICS",
    "SortedData",
    "overlapping",
    "prefix_sums",
    "quantile_bounds",
    "weighted_metrics",
]

CALIBRATION_CLIP = 1e-6
THRESHOLD_METRICS = ("sensitivity", "specificity", "ppv", "npv")


@dataclass(frozen=True)
class SortedData:
    p: np.ndarray  # ascending
    y: np.ndarray  # float 0/1, same order
    x: np.ndarray  # logit of p clipped to [CALIBRATION_CLIP, 1 - CALIBRATION_CLIP]
    starts: np.ndarray  # first position of each distinct value of p
    order: np.ndarray  # positions in the caller's order

    @classmethod
    def of(cls, y: np.ndarray, p: np.ndarray) -> SortedData:
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


def quantile_bounds(p_sorted: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
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


def prefix_sums(values: np.ndarray) -> np.ndarray:
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


def overlapping(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rows whose weighted data are not (quasi-)separated by x, so the slope MLE exists."""
    present = weights > 0
    pos = present & (y == 1)
    neg = present & (y == 0)
    min_pos = np.where(pos, x, np.inf).min(axis=1)
    max_pos = np.where(pos, x, -np.inf).max(axis=1)
    min_neg = np.where(neg, x, np.inf).min(axis=1)
    max_neg = np.where(neg, x, -np.inf).max(axis=1)
    return (min_pos < max_neg) & (min_neg < max_pos)


@dataclass(frozen=True)
class _Counts:
    """Weighted totals of each row: patients, events, non-events, and whether both occur."""

    total: np.ndarray
    events: np.ndarray
    non_events: np.ndarray
    both: np.ndarray

    @classmethod
    def of(cls, y: np.ndarray, weights: np.ndarray) -> _Counts:
        total = weights.sum(axis=1)
        events = weights @ y
        return cls(total, events, total - events, (events > 0) & (total - events > 0))


def _ranking(data: SortedData, weights: np.ndarray, c: _Counts) -> dict[str, np.ndarray]:
    """AUROC and average precision (AUPRC); NaN without both outcome classes."""
    y = data.y
    # Tied predictions form one group; the resampled curves step once per group.
    if data.starts.size == y.size:
        pos_g = weights * y
        neg_g = weights - pos_g
    else:
        ends = np.r_[data.starts, y.size]
        pos_g = np.diff(prefix_sums(weights * y)[:, ends], axis=1)
        neg_g = np.diff(prefix_sums(weights)[:, ends], axis=1) - pos_g
    pos_cum, neg_cum = np.cumsum(pos_g, axis=1), np.cumsum(neg_g, axis=1)
    auroc = _safe_ratio(_rowwise_dot(pos_g, neg_cum - 0.5 * neg_g), c.events * c.non_events)
    # Counted from the highest prediction down to and including each group.
    tp = c.events[:, None] - pos_cum + pos_g
    fp = c.non_events[:, None] - neg_cum + neg_g
    precision = np.zeros_like(tp)
    np.divide(tp, tp + fp, out=precision, where=(tp + fp) > 0)
    auprc = _safe_ratio(_rowwise_dot(pos_g, precision), c.events)
    return {"auroc": np.where(c.both, auroc, np.nan), "auprc": np.where(c.both, auprc, np.nan)}


def _accuracy(data: SortedData, weights: np.ndarray, c: _Counts) -> dict[str, np.ndarray]:
    """Brier score and log loss (probabilities clipped as scikit-learn's log_loss does)."""
    y, p = data.y, data.p
    eps = np.finfo(float).eps
    q = np.clip(p, eps, 1 - eps)
    return {"brier": weights @ (p - y) ** 2 / c.total,
            "log_loss": weights @ -(y * np.log(q) + (1 - y) * np.log1p(-q)) / c.total}


def _calibration(data: SortedData, weights: np.ndarray, c: _Counts) -> dict[str, np.ndarray]:
    """Calibration slope (NaN when separated) and intercept (NaN with one outcome class)."""
    slope = np.full(weights.shape[0], np.nan)
    intercept = np.full(weights.shape[0], np.nan)
    if c.both.any():
        intercept[c.both] = _offset_intercepts(data.x, data.y, weights[c.both])
    fit = c.both & overlapping(data.x, data.y, weights)
    if fit.any():
        slope[fit] = _logistic_slopes(data.x, data.y, weights[fit])
    return {"calibration_slope": slope, "calibration_intercept": intercept}


def _ece(data: SortedData, weights: np.ndarray, c: _Counts, n_bins: int) -> np.ndarray:
    """Expected calibration error over equal-frequency bins of each row's sample."""
    bounds = quantile_bounds(data.p, weights, n_bins)
    gap = prefix_sums(weights * (data.p - data.y))
    per_bin = np.diff(np.take_along_axis(gap, bounds, axis=1), axis=1)
    return np.abs(per_bin).sum(axis=1) / c.total


def _at_thresholds(
    data: SortedData, weights: np.ndarray, c: _Counts, thresholds: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV and NPV at each named threshold (test-positive: p >= t)."""
    cum_w, cum_wy = prefix_sums(weights), prefix_sums(weights * data.y)
    out = {}
    for name, t in thresholds.items():
        k = int(np.searchsorted(data.p, t, side="left"))  # positions >= k are test-positive
        tp = c.events - cum_wy[:, k]
        test_pos = c.total - cum_w[:, k]
        tn = c.non_events - (test_pos - tp)
        out[f"sensitivity_{name}"] = _safe_ratio(tp, c.events)
        out[f"specificity_{name}"] = _safe_ratio(tn, c.non_events)
        out[f"ppv_{name}"] = _safe_ratio(tp, test_pos)
        out[f"npv_{name}"] = _safe_ratio(tn, c.total - test_pos)
    return out


def weighted_metrics(
    data: SortedData,
    weights: np.ndarray,
    thresholds: Mapping[str, float],
    n_bins: int = 10,
    which: frozenset[str] | None = None,
) -> dict[str, np.ndarray]:
    """Metrics of each row of ``weights`` (aligned to ``data``); NaN where undefined.

    Parameters
    ----------
    data
        The patients, sorted by predicted probability.
    weights
        Array of shape (rows, n): each row one weighting of the patients (a resample's
        multiplicities, or ones for the data itself).
    thresholds
        Named decision thresholds for sensitivity, specificity, PPV and NPV.
    n_bins
        Quantile bins of the expected calibration error.
    which
        Names of the metrics wanted; all when None.

    Returns
    -------
    dict of str to ndarray
        One array of length ``rows`` per metric.
    """

    def wanted(*names: str) -> bool:
        return which is None or any(name in which for name in names)

    c = _Counts.of(data.y, weights)
    out: dict[str, np.ndarray] = {}
    if wanted("auroc", "auprc"):
        out.update(_ranking(data, weights, c))
    if wanted("brier", "log_loss"):
        out.update(_accuracy(data, weights, c))
    if wanted("calibration_slope", "calibration_intercept"):
        out.update(_calibration(data, weights, c))
    if wanted("ece"):
        out["ece"] = _ece(data, weights, c, n_bins)
    if wanted("prevalence"):
        out["prevalence"] = c.events / c.total
    if thresholds and wanted(*(f"{m}_{name}" for m in THRESHOLD_METRICS for name in thresholds)):
        out.update(_at_thresholds(data, weights, c, thresholds))
    return out
