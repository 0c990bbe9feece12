"""Subgroup tables: performance within each level of a grouping column, and age bands."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import brier_score_loss, roc_auc_score

from crsrisk.evaluation.metrics.bootstrap import bootstrap_interval, bootstrap_replicates
from crsrisk.evaluation.metrics.inputs import (
    check_bootstrap,
    check_inputs,
    check_thresholds,
    to_vector,
)
from crsrisk.evaluation.metrics.point import calibration_slope_intercept, threshold_metrics
from crsrisk.evaluation.metrics.weighted import THRESHOLD_METRICS

__all__ = ["AGE_BANDS", "age_band", "subgroup_table"]

AGE_BANDS = ("<40", "40-59", "60-69", "70+")
_COLUMNS = ("n", "events", "prevalence", "auroc", "auroc_lower", "auroc_upper",
            "calibration_intercept", "brier", "mean_predicted", "observed", "too_few_events")


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
    ages = to_vector(age_years, "age_years")
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
        ``prevalence``, ``auroc``, ``auroc_lower``, ``auroc_upper`` (95% bootstrap interval,
        as in :func:`bootstrap_metrics`),
        ``calibration_intercept``, ``brier``, ``mean_predicted``, ``observed`` (the event rate,
        next to ``mean_predicted`` for observed-versus-expected reading), ``too_few_events``,
        and the threshold metrics when ``thresholds`` is given.
    """
    y_arr, p_arr = check_inputs(y, p)
    named = check_thresholds(thresholds)
    check_bootstrap(n_boot, 0.95)
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
        for level, mask in _groups(frame[variable].reset_index(drop=True)):
            row = {"variable": variable, "level": level}
            row.update(_subgroup_row(y_arr[mask], p_arr[mask], named, min_events, n_boot,
                                     seed + len(rows)))
            rows.append(row)
    columns = ["variable", "level", *_COLUMNS]
    columns += [f"{m}_{name}" for name in named for m in THRESHOLD_METRICS]
    return pd.DataFrame(rows, columns=columns).astype(
        {"variable": "str", "level": "str", "too_few_events": "bool"})


def _groups(values: pd.Series) -> list[tuple[str, np.ndarray]]:
    """(label, mask) of each level present, then of the missing values when there are any."""
    groups = [(_label(level), (values == level).to_numpy(dtype=bool, na_value=False))
              for level in _levels(values)]
    missing = values.isna().to_numpy()
    if missing.any():
        groups.append(("missing", missing))
    return groups


def _subgroup_row(
    y: np.ndarray, p: np.ndarray, named: Mapping[str, float], min_events: int, n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The figures of one subgroup (see `subgroup_table`)."""
    n, events = int(y.size), int(y.sum())
    flagged = events < min_events or n - events < min_events
    auroc = lower = upper = math.nan
    if not flagged:
        auroc = float(roc_auc_score(y, p))
        replicates = bootstrap_replicates(y, p, {}, n_boot, seed, frozenset({"auroc"}))
        lower, upper, _ = bootstrap_interval(replicates["auroc"], auroc, 0.95, (0.0, 1.0))
    return {
        "n": n, "events": events, "prevalence": events / n, "auroc": auroc,
        "auroc_lower": lower, "auroc_upper": upper,
        "calibration_intercept": calibration_slope_intercept(y, p)[1],
        "brier": float(brier_score_loss(y, p, labels=[0, 1])),
        "mean_predicted": float(p.mean()), "observed": events / n,
        "too_few_events": flagged, **threshold_metrics(y, p, named),
    }
