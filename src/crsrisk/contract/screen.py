"""A quick, vectorised pass over a pandera schema's checks, to skip pandera on clean tables.

pandera spends about a millisecond per column and check whatever the number of rows: most of
the time of a one-row REST request. `passes` evaluates the same checks, read from the schema
itself (dtype, nullable, unique, ``in_range``, ``isin``, ``str_length`` and the wide checks'
own functions), and answers True only when it has seen every one of them pass. Anything else
(a failed check, a check it does not know) answers False, and pandera then runs as before and
reports each problem: the screen can skip pandera, never change its verdict.

`unproven` says which columns and wide checks the screen could not see pass, and `narrowed`
is the schema of only those: a table with a few bad rows in one column then pays pandera for
that column alone. Columns are checked independently by pandera, so its verdict on the others
is the screen's (nothing), and on these its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine

__all__ = ["Unproven", "passes", "unproven", "narrowed"]


def _check_passes(check: pa.Check, values: pd.Series) -> bool:
    """Whether every non-missing value passes one built-in column check (False if unknown)."""
    stats = check.statistics or {}
    if not check.ignore_na:
        return False
    if check.name == "in_range" and stats.get("include_min") and stats.get("include_max"):
        if values.dtype == "float64" or values.dtype == "Int64":
            # numpy on the values: pandas' reductions cost more than the check on a few rows.
            numbers = values.to_numpy(dtype="float64", na_value=np.nan)
            numbers = numbers[~np.isnan(numbers)]
            return numbers.size == 0 or bool(numbers.min() >= stats["min_value"]
                                             and numbers.max() <= stats["max_value"])
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


@dataclass(frozen=True)
class Unproven:
    """The columns and wide checks (positions in ``schema.checks``) not seen to pass."""

    columns: tuple[str, ...]
    checks: tuple[int, ...]

    def __bool__(self) -> bool:
        return bool(self.columns or self.checks)


def _column_passes(column: pa.Column, frame: pd.DataFrame, name: str) -> bool:
    if name not in frame.columns:
        return False
    values = frame[name]
    if not _dtype_ok(column.dtype, values.dtype):
        return False
    if not column.nullable and values.isna().any():
        return False
    if column.unique and values.duplicated(keep=False).any():
        return False
    return all(_check_passes(check, values) for check in column.checks)


def _wide_check_passes(check: pa.Check, frame: pd.DataFrame) -> bool:
    if check.element_wise or getattr(check, "groupby", None) is not None:
        return False
    result = check._check_fn(frame)
    return isinstance(result, pd.Series) and not result.isna().any() and bool(result.all())


def unproven(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> Unproven:
    """The columns and wide checks of ``schema`` that ``frame`` was not seen to pass."""
    return Unproven(
        tuple(name for name, column in schema.columns.items()
              if not _column_passes(column, frame, name)),
        tuple(i for i, check in enumerate(schema.checks) if not _wide_check_passes(check, frame)),
    )


def passes(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> bool:
    """True when ``frame`` certainly passes every check of ``schema``; False when it may not."""
    return not unproven(schema, frame)


# Narrowed schemas by (schema, unproven); the schema is kept in the value so that its id is not
# reused while the entry lives. Few distinct entries occur: one per kind of problem in a file.
_NARROWED: dict[tuple[int, Unproven], tuple[pa.DataFrameSchema, pa.DataFrameSchema]] = {}


def narrowed(schema: pa.DataFrameSchema, which: Unproven) -> pa.DataFrameSchema:
    """``schema`` with only the columns and wide checks in ``which`` (same settings)."""
    key = (id(schema), which)
    if key not in _NARROWED:
        if len(_NARROWED) > 256:
            _NARROWED.clear()
        sub = schema.select_columns(list(which.columns))  # a copy: the schema is untouched
        sub.checks = [schema.checks[i] for i in which.checks]
        _NARROWED[key] = (schema, sub)
    return _NARROWED[key][1]
