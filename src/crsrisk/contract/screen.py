"""A quick, vectorised pass over a pandera schema's checks, to skip pandera on clean tables.

pandera spends about a millisecond per column and check whatever the number of rows: most of
the time of a one-row REST request. `passes` evaluates the same checks, read from the schema
itself (dtype, nullable, unique, ``in_range``, ``isin``, ``str_length`` and the wide checks'
own functions), and answers True only when it has seen every one of them pass. Anything else
(a failed check, a check it does not know) answers False, and pandera then runs as before and
reports each problem: the screen can skip pandera, never change its verdict.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine

__all__ = ["passes"]


def _check_passes(check: pa.Check, values: pd.Series) -> bool:
    """Whether every non-missing value passes one built-in column check (False if unknown)."""
    stats = check.statistics or {}
    if not check.ignore_na:
        return False
    if check.name == "in_range" and stats.get("include_min") and stats.get("include_max"):
        if values.notna().sum() == 0:
            return True
        return bool(values.min() >= stats["min_value"] and values.max() <= stats["max_value"])
    if check.name == "isin":
        if isinstance(values.dtype, pd.CategoricalDtype):
            codes = values.cat.codes.to_numpy()
            used = values.cat.categories[np.unique(codes[codes >= 0])]
        else:
            used = values.dropna().unique()
        return set(used) <= set(stats["allowed_values"])
    if check.name == "str_length" and stats.get("exact_value") is None:
        if stats.get("max_value") is not None or values.notna().sum() == 0:
            return stats.get("max_value") is None
        return bool(values.str.len().min() >= (stats.get("min_value") or 0))
    return False


@lru_cache(maxsize=256)
def _dtype_ok(expected: object, actual: object) -> bool:
    try:
        return bool(expected.check(pandas_engine.Engine.dtype(actual)))
    except TypeError:
        return False


def passes(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> bool:
    """True when ``frame`` certainly passes every check of ``schema``; False when it may not."""
    for name, column in schema.columns.items():
        if name not in frame.columns:
            return False
        values = frame[name]
        if not _dtype_ok(column.dtype, values.dtype):
            return False
        if not column.nullable and values.isna().any():
            return False
        if column.unique and values.duplicated(keep=False).any():
            return False
        if not all(_check_passes(check, values) for check in column.checks):
            return False
    for check in schema.checks:
        if check.element_wise or getattr(check, "groupby", None) is not None:
            return False
        result = check._check_fn(frame)
        if not isinstance(result, pd.Series) or result.isna().any() or not result.all():
            return False
    return True
