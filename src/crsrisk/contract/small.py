"""Validation of a small, clean table cell by cell in plain Python: the REST server's case.

`validate` checks a table column by column with pandas and pandera, at a cost of some 20 ms
whatever the number of rows: most of the time of a one-patient request. Most requests are
clean, and for a few rows each cell is quicker to read and check on its own. `clean_rows`
does that for tables of up to `SMALL_TABLE_ROWS` rows, and answers only when it has seen every
cell parse as plainly as the column-wise parsers would read it and every rule pass: then it
returns exactly what `validate` returns (the same typed frame, an empty rejected table).
Anything else (a value out of range, a word it does not know, a column it would have to
rename, a dtype it does not handle) answers None, and the column-wise path runs as before and
reports each problem. This path can skip work, never change a verdict;
``tests/test_small_tables.py`` holds it to equality with the column-wise path on generated
tables.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

from crsrisk.contract.header import match_header
from crsrisk.contract.parse import FALSE_WORDS, TRUE_WORDS
from crsrisk.contract.spec import FIRST_INFUSION_DATE, ColumnSpec
from crsrisk.errors import ContractError
from crsrisk.io import BAD_ROWS, FORMULA_PREFIXES

__all__ = ["SMALL_TABLE_ROWS", "clean_rows"]

# Beyond some tens of rows the column-wise path is as fast, and it is the one that reports.
SMALL_TABLE_ROWS = 32


class _NotPlain(Exception):
    """A cell or column this path does not decide: the column-wise path takes the table."""


# A number as both Arrow's and Python's parsers read it, to the same double.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PLAIN_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Trimmed by Arrow and by Python alike; a cell with other surrounding space is left to pandas.
_SPACES = " \t\r\n"


def _missing(value: object) -> bool:
    return (value is None or value is pd.NA or value is pd.NaT
            or (isinstance(value, float) and math.isnan(value)))


def _text(value: object) -> str | None:
    """A text cell trimmed, None when missing or empty; raises `_NotPlain` if not text."""
    if _missing(value):
        return None
    if not isinstance(value, str):
        raise _NotPlain
    trimmed = value.strip(_SPACES)
    if trimmed != value.strip():
        raise _NotPlain
    return trimmed or None


# Each reader takes a column's cells (Python objects) and dtype (None: the column is absent) and
# returns the typed array and the values as Python objects, None where missing (for the rules).
Read = tuple[object, list]


def _numbers(cells: list, dtype: object, spec: ColumnSpec) -> Read:
    if dtype is not None and pd.api.types.is_bool_dtype(dtype):
        raise _NotPlain
    if dtype is not None and pd.api.types.is_numeric_dtype(dtype):
        parsed = [np.nan if _missing(v) else v for v in cells]
    else:
        parsed = []
        for value in cells:
            text = _text(value)
            if text is not None and _PLAIN_NUMBER.fullmatch(text) is None:
                raise _NotPlain
            parsed.append(np.nan if text is None else float(text))
    number = np.array(parsed, dtype="float64") + 0.0  # -0 becomes 0, as the parsers do
    present = ~np.isnan(number)
    values = number[present]
    if not spec.nullable and not present.all():
        raise _NotPlain
    if spec.min is not None and spec.max is not None and values.size and not (
            values.min() >= spec.min and values.max() <= spec.max):
        raise _NotPlain  # also refuses infinities
    plain = [None if math.isnan(v) else v for v in number.tolist()]
    if spec.kind == "int":
        if (values != np.floor(values)).any():
            raise _NotPlain
        return pd.array(number, dtype="Int64"), plain
    return number, plain


def _bools(cells: list, dtype: object, spec: ColumnSpec) -> Read:
    typed = dtype is not None and pd.api.types.is_bool_dtype(dtype)
    values, missing = [], []
    for value in cells:
        if typed:
            word = "" if _missing(value) else ("true" if value else "false")
        else:
            word = "" if _missing(value) else str(value).strip().lower()
        if word and word not in TRUE_WORDS and word not in FALSE_WORDS:
            raise _NotPlain
        values.append(word in TRUE_WORDS)
        missing.append(word == "")
    if not spec.nullable and any(missing):
        raise _NotPlain
    flags = pd.arrays.BooleanArray(np.array(values, dtype=bool), np.array(missing, dtype=bool))
    return flags, [None if m else v for v, m in zip(values, missing, strict=True)]


def _dates(cells: list, dtype: object, spec: ColumnSpec, today: dt.date) -> Read:
    days: list[np.datetime64 | None] = []
    if dtype is not None and pd.api.types.is_datetime64_any_dtype(dtype):
        if getattr(dtype, "tz", None) is not None:
            raise _NotPlain  # a time zone's wall clock is the column-wise path's
        days = [None if _missing(v) else np.datetime64(v) for v in cells]
    else:
        for value in cells:
            text = _text(value)
            if text is not None and _PLAIN_DATE.fullmatch(text) is None:
                raise _NotPlain
            try:
                days.append(None if text is None else np.datetime64(dt.date.fromisoformat(text)))
            except ValueError:
                raise _NotPlain from None
    first, last = np.datetime64(FIRST_INFUSION_DATE), np.datetime64(today)
    if not spec.nullable and None in days:
        raise _NotPlain
    if not all(first <= day <= last for day in days if day is not None):
        raise _NotPlain  # compared in the value's own unit, before any conversion
    stamps = np.array([np.datetime64("NaT") if d is None else d for d in days],
                      dtype="datetime64[ns]")
    return stamps, days


@lru_cache(maxsize=64)
def _levels(levels: tuple[str, ...]) -> tuple[dict[str, int], pd.CategoricalDtype]:
    return ({level.lower(): i for i, level in enumerate(levels)},
            pd.CategoricalDtype(list(levels)))


def _categories(cells: list, dtype: object, spec: ColumnSpec) -> Read:
    codes_of, categorical = _levels(spec.levels)
    codes = []
    for value in cells:
        text = "" if _missing(value) else str(value).strip()
        code = codes_of.get(text.lower()) if text else -1
        if code is None or (code < 0 and not spec.nullable):
            raise _NotPlain
        codes.append(code)
    return (pd.Categorical.from_codes(codes, dtype=categorical),
            [spec.levels[c] if c >= 0 else None for c in codes])


def _strings(cells: list, dtype: object, spec: ColumnSpec, unique: bool) -> Read:
    texts = [_text(value) for value in cells]
    present = [t for t in texts if t is not None]
    if any(t.startswith(FORMULA_PREFIXES) for t in present):
        raise _NotPlain
    if not spec.nullable and len(present) < len(cells):
        raise _NotPlain
    if unique and len(set(texts)) < len(cells):
        raise _NotPlain
    return pd.array(texts, dtype="str"), texts


def clean_rows(
    raw: pd.DataFrame,
    specs: Sequence[ColumnSpec],
    *,
    today: dt.date,
    rules: Sequence[Callable[[Mapping[str, object]], bool]] = (),
    unique: str = "patient_id",
    row_offset: int = 0,
) -> pd.DataFrame | None:
    """The typed rows of a small table whose every cell and rule was seen to pass, or None.

    Returns the frame the column-wise path would return as valid (contract columns in spec
    order, typed, categories on their fixed levels; then the extra columns as given), indexed
    from ``row_offset``. ``rules`` say whether one row (a dict of its values, None where
    missing) breaks a rule between columns. None: the table is not small, not plain or not
    clean, or it needs what only the column-wise path does (renamed columns, unread rows).
    """
    n = len(raw)
    if not 0 < n <= SMALL_TABLE_ROWS or raw.attrs.get(BAD_ROWS) or raw.columns.has_duplicates:
        return None
    if not all(isinstance(c, str) for c in raw.columns):
        return None
    try:
        renames, _ = match_header(raw.columns, [spec.name for spec in specs])
    except ContractError:
        return None
    if renames:
        return None
    dtypes = dict(zip(raw.columns, raw.dtypes, strict=True))
    # One conversion of the whole table: per-column access costs more than the checks.
    cells = dict(zip(raw.columns, raw.to_numpy(dtype=object).T.tolist(), strict=True))
    typed: dict[str, object] = {}
    plain: dict[str, list] = {}
    absent = [None] * n
    try:
        for spec in specs:
            if spec.name not in cells and not spec.nullable:
                return None  # a required column is absent: the column-wise path says so
            args = (cells.get(spec.name, absent), dtypes.get(spec.name), spec)
            if spec.kind in ("float", "int"):
                read = _numbers(*args)
            elif spec.kind == "bool":
                read = _bools(*args)
            elif spec.kind == "date":
                read = _dates(*args, today)
            elif spec.kind == "category":
                read = _categories(*args)
            else:
                read = _strings(*args, unique=spec.name == unique)
            typed[spec.name], plain[spec.name] = read
    except _NotPlain:
        return None
    for values in zip(*plain.values(), strict=True):
        row = dict(zip(plain, values, strict=True))
        if any(broken(row) for broken in rules):
            return None
    extras = {name: raw[name].array for name in raw.columns if name not in typed}
    return pd.DataFrame({**typed, **extras}, index=pd.RangeIndex(row_offset, row_offset + n))
