"""Bootstrap intervals of the metrics: seeded resamples, all computed in one vectorised pass.

The interval is the percentile interval re-centred on the estimate. The plain percentile
interval can miss its own estimate when resampling biases a metric: duplicated patients add
noise to the bin means of the expected calibration error, so its resampled values sit above
the estimate (an estimate of 0.042 came out with an interval of [0.055, 0.134]). Re-centred,
the interval keeps the spread of the resampled values below and above their median and lays it
below and above the estimate: it contains the estimate by construction, and equals the
percentile interval when the resampled values centre on the estimate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from crsrisk.evaluation.metrics.inputs import check_bootstrap, check_inputs, check_thresholds
from crsrisk.evaluation.metrics.point import point_metrics
from crsrisk.evaluation.metrics.weighted import SortedData, weighted_metrics

__all__ = [
    "INTERVAL_METHOD",
    "bootstrap_interval",
    "bootstrap_metrics",
    "bootstrap_replicates",
    "metric_range",
    "resample_blocks",
]

INTERVAL_METHOD = (
    "bootstrap, patients resampled with replacement; percentile interval re-centred on the "
    "estimate (the resampled values' spread below and above their median, laid below and "
    "above the estimate, within the metric's range), so it always contains the estimate"
)
# Bootstrap resamples are processed in blocks of at most this many cells (resamples x patients)
# so memory stays bounded for large cohorts.
_BLOCK_CELLS = 2_000_000


def resample_blocks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Seeded bootstrap resamples (rows of patient positions), in memory-bounded blocks."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, n_boot, block):
        yield rng.integers(0, n, size=(min(block, n_boot - start), n))


def bootstrap_replicates(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: Mapping[str, float],
    n_boot: int,
    seed: int,
    which: frozenset[str] | None = None,
) -> dict[str, np.ndarray]:
    """Each metric on each of ``n_boot`` resamples of the patients (NaN where undefined)."""
    data = SortedData.of(y, p)
    rank = np.empty(y.size, dtype=np.intp)
    rank[data.order] = np.arange(y.size)  # caller position -> sorted position
    parts: list[dict[str, np.ndarray]] = []
    for indices in resample_blocks(y.size, n_boot, seed):
        rows = indices.shape[0]
        flat = (rank[indices] + np.arange(rows)[:, None] * y.size).ravel()
        counts = np.bincount(flat, minlength=rows * y.size).reshape(rows, y.size)
        parts.append(weighted_metrics(data, counts.astype(float), thresholds, 10, which))
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def metric_range(metric: str) -> tuple[float, float]:
    """The values a metric can take: [0, 1] except the calibration fits and the log loss."""
    if metric in ("calibration_slope", "calibration_intercept"):
        return -math.inf, math.inf
    if metric == "log_loss":
        return 0.0, math.inf
    return 0.0, 1.0


def bootstrap_interval(
    replicates: np.ndarray, estimate: float, level: float, bounds: tuple[float, float]
) -> tuple[float, float, int]:
    """Interval of ``estimate`` from its bootstrap replicates; see `INTERVAL_METHOD`.

    Returns
    -------
    (lower, upper, used)
        NaN bounds when no replicate (or the estimate) is defined; ``used`` counts the
        replicates on which the metric was defined.
    """
    valid = replicates[np.isfinite(replicates)]
    if not valid.size or not math.isfinite(estimate):
        return math.nan, math.nan, int(valid.size)
    alpha = 100 * (1 - level) / 2
    low, middle, high = np.percentile(valid, [alpha, 50, 100 - alpha])
    lower = max(bounds[0], min(estimate, estimate - (middle - low)))
    upper = min(bounds[1], max(estimate, estimate + (high - middle)))
    return float(lower), float(upper), int(valid.size)


def bootstrap_metrics(
    y: ArrayLike,
    p: ArrayLike,
    thresholds: Mapping[str, float] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Point metrics with bootstrap confidence intervals that contain the estimate.

    Patients are resampled with replacement; a resample on which a metric is undefined (for
    example AUROC on a resample with one outcome class) is left out of that metric's interval.
    The interval is formed as `INTERVAL_METHOD` says; every metric of a resample is computed in
    one vectorised pass over all resamples (`crsrisk.evaluation.metrics.weighted`).

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
    y_arr, p_arr = check_inputs(y, p)
    named = check_thresholds(thresholds)
    check_bootstrap(n_boot, level)
    estimates = point_metrics(y_arr, p_arr, named)
    replicates = bootstrap_replicates(y_arr, p_arr, named, n_boot, seed)
    rows = []
    for metric, estimate in estimates.items():
        if metric in ("n", "events"):
            continue
        lower, upper, used = bootstrap_interval(replicates[metric], float(estimate), level,
                                                metric_range(metric))
        rows.append({"metric": metric, "estimate": float(estimate), "lower": lower,
                     "upper": upper, "n_resamples": used})
    return pd.DataFrame(rows).astype({"metric": "str"})
