"""Why a metric is undefined (NaN) on the data given, in words a reader can act on."""

from __future__ import annotations

import math
from collections.abc import Mapping

from numpy.typing import ArrayLike

from crsrisk.evaluation.metrics.inputs import check_inputs, check_thresholds
from crsrisk.evaluation.metrics.point import calibration_slope_intercept
from crsrisk.evaluation.metrics.weighted import THRESHOLD_METRICS

__all__ = ["undefined_reason"]


def _one_class(events: int, n: int) -> str | None:
    if events == 0:
        return f"no patient with severe CRS among the {n}"
    if events == n:
        return f"every one of the {n} patients had severe CRS"
    return None


def undefined_reason(
    metric: str, y: ArrayLike, p: ArrayLike, thresholds: Mapping[str, float] | None = None
) -> str | None:
    """Why ``metric`` is undefined on ``y`` and ``p``, or None when it is defined.

    Parameters
    ----------
    metric : str
        A name from :func:`point_metrics`, e.g. ``auroc`` or ``npv_low``.
    y, p : array-like of shape (n,)
        Observed outcomes (0/1) and predicted probabilities.
    thresholds : mapping of str to float, optional
        The named thresholds behind the threshold metrics.

    Returns
    -------
    str or None
        For example ``"no patient below the low threshold (0.030)"``.
    """
    y_arr, p_arr = check_inputs(y, p)
    named = check_thresholds(thresholds)
    n, events = int(y_arr.size), int(y_arr.sum())
    if metric in ("auroc", "auprc", "calibration_intercept"):
        return _one_class(events, n)
    if metric == "calibration_slope":
        if _one_class(events, n) or not math.isnan(calibration_slope_intercept(y_arr, p_arr)[0]):
            return _one_class(events, n)
        return "the predictions separate the outcomes completely, so no finite slope exists"
    kind, _, name = metric.partition("_")
    if kind not in THRESHOLD_METRICS or name not in named:
        return None
    t = named[name]
    positive = p_arr >= t
    reasons = {
        "sensitivity": None if events else f"no patient with severe CRS among the {n}",
        "specificity": None if events < n else f"no patient without severe CRS among the {n}",
        "ppv": None if positive.any() else f"no patient at or above the {name} threshold "
                                           f"({t:.3f})",
        "npv": None if (~positive).any() else f"no patient below the {name} threshold ({t:.3f})",
    }
    return reasons[kind]
