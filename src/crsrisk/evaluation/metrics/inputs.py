"""Checking of the metrics' inputs: outcomes, probabilities, thresholds and settings.

Every check returns the value as a numpy array (or plain number) or raises a ValueError whose
message names the first bad value and its position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

__all__ = [
    "DECISION_THRESHOLDS",
    "check_bootstrap",
    "check_decision_thresholds",
    "check_inputs",
    "check_n_bins",
    "check_outcomes",
    "check_probabilities",
    "check_thresholds",
    "to_vector",
]

DECISION_THRESHOLDS = np.round(np.arange(1, 51) / 100, 2)


def to_vector(values: Any, name: str) -> np.ndarray:
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


def check_outcomes(y: ArrayLike, name: str = "y") -> np.ndarray:
    """``y`` as an int64 array of 0/1, or a ValueError naming the first bad value."""
    values = to_vector(y, name)
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


def check_probabilities(p: ArrayLike, name: str = "p") -> np.ndarray:
    """``p`` as a float64 array in [0, 1], or a ValueError naming the first bad value."""
    values = to_vector(p, name)
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


def check_inputs(y: ArrayLike, p: ArrayLike, p_name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    """Outcomes and probabilities of the same patients, non-empty and of equal length."""
    y_arr = check_outcomes(y)
    p_arr = check_probabilities(p, p_name)
    if y_arr.size != p_arr.size:
        raise ValueError(
            f"y has {y_arr.size} values but {p_name} has {p_arr.size}; they must describe the "
            "same patients in the same order.")
    if y_arr.size == 0:
        raise ValueError("y and p are empty; metrics need at least one patient.")
    return y_arr, p_arr


def check_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    """Named decision thresholds as floats in [0, 1]; an empty dict for None."""
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


def check_n_bins(n_bins: int) -> int:
    """A positive number of calibration bins."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}.")
    return int(n_bins)


def check_decision_thresholds(thresholds: ArrayLike | None) -> np.ndarray:
    """Decision-curve thresholds in [0, 1); 0.01 to 0.50 for None."""
    if thresholds is None:
        return DECISION_THRESHOLDS
    if np.ndim(thresholds) == 0:
        thresholds = [thresholds]
    t = to_vector(thresholds, "thresholds")
    if not t.size:
        raise ValueError("thresholds is empty; give at least one threshold probability.")
    bad = np.flatnonzero(~((t >= 0) & (t < 1)))
    if bad.size:
        raise ValueError(
            f"decision thresholds must lie in [0, 1); found {t[bad[0]]:g} at position {bad[0]} "
            "(net benefit weighs false positives by t / (1 - t)).")
    return t


def check_bootstrap(n_boot: int, level: float) -> None:
    """A positive number of resamples and a coverage strictly between 0 and 1."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}.")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level!r}.")
