"""Parsing raw cells (text from CSV or Excel, typed from Parquet) into the contract's dtypes.

A cell that cannot be parsed becomes missing and a problem (row, column, rule in words), for
the validator to report in the rejected table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.compute as pc

from crsrisk.contract.spec import ColumnSpec
from crsrisk.io import FORMULA_PREFIXES

__all__ = ["TRUE_WORDS", "FALSE_WORDS", "Problems", "stripped_text", "PARSERS", "parse_columns"]

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "0.0"})

@dataclass
class Problems:
    """Accumulates (row position, column, rule) triples found while parsing."""

    rows: list[np.ndarray] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)

    def add(self, mask: pd.Series | np.ndarray, column: str, words: str) -> None:
        positions = np.flatnonzero(np.asarray(mask, dtype=bool))
        if positions.size:
            self.rows.append(positions)
            self.columns.append(column)
            self.words.append(words)


def _arrow_text(col: pd.Series) -> pyarrow.Array | None:
    """The Arrow array behind an Arrow-backed text column (as CSV and Parquet give text)."""
    if col.dtype == "str" and getattr(col.dtype, "storage", None) == "pyarrow":
        return pyarrow.array(col)
    return None


def stripped_text(col: pd.Series) -> pd.Series:
    """Text with surrounding spaces removed and empty strings as missing."""
    arrow = _arrow_text(col)
    if arrow is not None:
        # Text as CSV delivers it: the same steps in one Arrow pass, without pandas' copies.
        trimmed = pc.utf8_trim_whitespace(arrow)
        blank = pc.equal(trimmed, "")
        text = pc.if_else(blank, pyarrow.scalar(None, trimmed.type), trimmed).to_pandas()
        return text.astype("str").set_axis(col.index)
    present = col.notna()
    if not present.any():  # an absent optional column, or one sent empty: nothing to strip
        return pd.Series(np.nan, index=col.index, dtype="str", name=col.name)
    text = col.astype("str").str.strip().where(present)
    return text.where(text.ne(""))


def _arrow_float(text: pyarrow.Array) -> np.ndarray | None:
    """Arrow text that is all plain numbers as float64 (missing as NaN); None if any cell is
    not one (spaces, words): Arrow then refuses the whole column.

    Arrow's parser reads a column of clean numbers about ten times faster than
    ``pd.to_numeric``.
    """
    try:
        parsed = pc.cast(text, pyarrow.float64())
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError, pyarrow.ArrowNotImplementedError):
        return None
    return parsed.to_numpy(zero_copy_only=False)


def _to_float(text: pd.Series) -> np.ndarray:
    """Stripped text to float64, NaN where it is not a number."""
    parsed = _arrow_float(pyarrow.array(text, type=pyarrow.large_string()))
    if parsed is None:
        return pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return parsed


def _parse_number(col: pd.Series, spec: ColumnSpec, problems: Problems) -> pd.Series:
    if pd.api.types.is_bool_dtype(col):
        problems.add(col.notna(), spec.name, "must be a number")
        return pd.Series(np.nan, index=col.index)
    if pd.api.types.is_numeric_dtype(col):
        number = col.to_numpy(dtype="float64", na_value=np.nan)
    else:
        # Plain numbers need no trimming first, the common case; the rest take the full path.
        arrow = _arrow_text(col)
        number = None if arrow is None else _arrow_float(arrow)
        if number is None:
            text = stripped_text(col)
            number, present = _to_float(text), text.notna().to_numpy()
        else:
            present = col.notna().to_numpy()
        problems.add(present & np.isnan(number), spec.name, "must be a number")
    number = number + 0.0  # a new array; and -0 becomes 0, whichever parser read it
    infinite = np.isinf(number)
    problems.add(infinite, spec.name, "must be a finite number")
    number[infinite] = np.nan
    if spec.kind == "int":
        fractional = ~np.isnan(number) & (number != np.floor(number))
        problems.add(fractional, spec.name, "must be a whole number")
        number[fractional] = np.nan
        # Beyond 2**53 a float is no longer an exact integer (and may not fit int64): clamp, and
        # let the range check reject it with the value as given.
        np.clip(number, -(2.0**53), 2.0**53, out=number)
        return pd.Series(number, index=col.index).astype("Int64")
    return pd.Series(number, index=col.index)


def _parse_bool(col: pd.Series, spec: ColumnSpec, problems: Problems) -> pd.Series:
    """True and false words, trimmed and in any case; read once per distinct value."""
    if pd.api.types.is_bool_dtype(col):
        return col.astype("boolean")
    codes, distinct = pd.factorize(col)
    words = [str(value).strip().lower() for value in distinct]

    def per_row(flags: list[bool]) -> np.ndarray:
        # An extra last slot, False, for code -1 (missing).
        return np.array([*flags, False], dtype=bool)[codes]

    true = per_row([w in TRUE_WORDS for w in words])
    false = per_row([w in FALSE_WORDS for w in words])
    given = per_row([w != "" for w in words])
    problems.add(given & ~true & ~false, spec.name, "must be true or false")
    return pd.Series(pd.arrays.BooleanArray(true, ~(true | false)), index=col.index)


# datetime64[ns] spans 1677-09-22 .. 2262-04-11: a date beyond (0001-01-01, 9999-12-31) is clamped
# to an end, which the date range check then rejects with the value as given.
_NS_FIRST, _NS_LAST = pd.Timestamp("1677-09-22"), pd.Timestamp("2262-04-11")
_UTC_OFFSET = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def _as_ns(stamps: pd.Series) -> pd.Series:
    """Wall-clock datetime64[ns], clamped to its range."""
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_localize(None)
    return stamps.clip(lower=_NS_FIRST, upper=_NS_LAST).astype("datetime64[ns]")


def _parse_date(col: pd.Series, spec: ColumnSpec, problems: Problems) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col):
        return _as_ns(col)
    arrow = _arrow_text(col)
    if arrow is not None:
        # Plain YYYY-MM-DD cells, the common case: Arrow's strict parser (it refuses
        # 2024-02-30 and unpadded digits), else the general path below.
        try:
            days = pc.cast(arrow, pyarrow.date32())
        except pyarrow.ArrowInvalid:
            pass
        else:
            return _as_ns(pd.Series(days.to_numpy(zero_copy_only=False), index=col.index))
    text = stripped_text(col)
    try:
        stamps = pd.to_datetime(text, format="ISO8601", errors="coerce")
    except ValueError:
        # Cells with different UTC offsets: keep each one's own wall-clock date.
        naive = text.str.replace(_UTC_OFFSET, "", regex=True)
        stamps = pd.to_datetime(naive, format="ISO8601", errors="coerce")
    problems.add(
        text.notna() & stamps.isna(), spec.name, "must be an ISO 8601 date (YYYY-MM-DD)"
    )
    return _as_ns(stamps)


def _parse_category(col: pd.Series, spec: ColumnSpec, problems: Problems) -> pd.Series:
    """Levels match case-insensitively, spaces trimmed ("cd28 " is CD28); anything else is left
    for the checks. A column holds few distinct values: clean those, not every cell.

    The result is categorical over the cleaned values of this column (known or not), so the
    checks see every value as given; `_as_categorical` recodes it to the fixed levels.
    """
    canonical = {level.lower(): level for level in spec.levels}
    codes, distinct = pd.factorize(col)
    cleaned = []
    for value in distinct:
        text = str(value).strip()
        cleaned.append(canonical.get(text.lower(), text) if text else None)
    categories = pd.Index([c for c in dict.fromkeys(cleaned) if c is not None], dtype="str")
    # Code of each distinct value among the categories, and -1 (missing) for empty text and
    # for code -1 itself (the extra last slot).
    recode = np.append(categories.get_indexer(pd.Index(cleaned, dtype="str")), -1)
    values = pd.Categorical.from_codes(recode[codes], dtype=pd.CategoricalDtype(categories))
    return pd.Series(values, index=col.index)


def _parse_text(col: pd.Series, spec: ColumnSpec, problems: Problems) -> pd.Series:
    text = stripped_text(col)
    problems.add(
        text.str.startswith(FORMULA_PREFIXES).fillna(False),
        spec.name,
        "must not look like a spreadsheet formula (starts with =, +, -, @)",
    )
    return text.astype("str")


PARSERS = {
    "str": _parse_text,
    "category": _parse_category,
    "float": _parse_number,
    "int": _parse_number,
    "bool": _parse_bool,
    "date": _parse_date,
}


def parse_columns(
    raw: pd.DataFrame, specs: Sequence[ColumnSpec]
) -> tuple[pd.DataFrame, Problems]:
    """Cast the contract columns to their dtypes; unparseable cells become missing and a problem.

    Optional columns absent from the file are added as missing. Extra columns are untouched.
    """
    problems = Problems()
    parsed = {}
    for spec in specs:
        if spec.name in raw.columns:
            parsed[spec.name] = PARSERS[spec.kind](raw[spec.name], spec, problems)
        else:
            empty = pd.Series(pd.NA, index=raw.index, dtype="object")
            parsed[spec.name] = PARSERS[spec.kind](empty, spec, problems)
    extra = [name for name in raw.columns if name not in parsed]
    frame = pd.concat([pd.DataFrame(parsed, index=raw.index), raw[extra]], axis=1)
    return frame, problems
