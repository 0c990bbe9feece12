"""The data contract as pandera schemas, and `validate`: typed valid rows plus a rejected table.

Row-level problems never raise: each lands in the rejected table with its 1-based row number,
patient_id, column, the rule in words and the offending value. Table-level problems (empty, a
required column missing, every row invalid) raise ContractError with one sentence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

from crsrisk.contract.products import PRODUCTS
from crsrisk.contract.screen import passes
from crsrisk.contract.spec import (
    BASELINE_COLUMNS,
    CAR_T_ONLY,
    EVENT_COLUMNS,
    FIRST_INFUSION_DATE,
    OUTCOME_COLUMNS,
    REJECTED_COLUMNS_DOC,
    ColumnSpec,
)
from crsrisk.errors import ContractError
from crsrisk.io import FORMULA_PREFIXES

__all__ = [
    "REJECTED_COLUMNS",
    "TRUE_WORDS",
    "FALSE_WORDS",
    "PRODUCT_CLASS",
    "PRODUCT_COSTIM",
    "ContractRejection",
    "CrossRule",
    "BASELINE_RULES",
    "build_schema",
    "baseline_schema",
    "events_schema",
    "categorical_dtype",
    "stripped_text",
    "PARSERS",
    "parse_columns",
    "ValidationResult",
    "empty_rejected",
    "unit_warnings",
    "validate_table",
    "validate",
    "validate_events",
]

REJECTED_COLUMNS = REJECTED_COLUMNS_DOC
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "0.0"})
PRODUCT_CLASS = {name: p.therapy_class for name, p in PRODUCTS.items()}
PRODUCT_COSTIM = {name: p.costim_domain for name, p in PRODUCTS.items() if p.costim_domain}


class ContractRejection(ContractError):
    """Every row of a table was rejected; ``rejected`` holds why, row by row."""

    def __init__(self, message: str, rejected: pd.DataFrame) -> None:
        super().__init__(message)
        self.rejected = rejected


# ----------------------------------------------------------------------------------------------
# Schemas
# ----------------------------------------------------------------------------------------------


def _pandas_dtype(spec: ColumnSpec) -> object:
    return {
        "str": "str",
        # Checked with the levels of its chunk (any value, so an unknown one can be reported),
        # recoded to the fixed levels after validation.
        "category": "category",
        "float": "float64",
        "int": "Int64",
        "bool": "boolean",
        "date": "datetime64[ns]",
    }[spec.kind]


def _range_words(spec: ColumnSpec) -> str:
    return f"must be between {spec.min:g} and {spec.max:g}"


def _column_checks(spec: ColumnSpec, today: dt.date) -> list[pa.Check]:
    checks: list[pa.Check] = []
    if spec.kind in ("float", "int") and spec.min is not None and spec.max is not None:
        checks.append(pa.Check.in_range(spec.min, spec.max, error=_range_words(spec)))
    if spec.levels:
        words = f"must be one of {', '.join(spec.levels)}"
        checks.append(pa.Check.isin(list(spec.levels), error=words))
    if spec.kind == "str":
        checks.append(pa.Check.str_length(min_value=1, error="must not be empty"))
    if spec.kind == "date":
        first = pd.Timestamp(FIRST_INFUSION_DATE)
        checks.append(
            pa.Check.in_range(
                first,
                pd.Timestamp(today),
                error=f"must be between {FIRST_INFUSION_DATE} and today ({today.isoformat()})",
            )
        )
    return checks


@dataclass(frozen=True)
class CrossRule:
    """A rule between columns; a row breaking it is reported against ``column``."""

    column: str
    words: str
    broken: Callable[[pd.DataFrame], pd.Series]


def _is_car_t(df: pd.DataFrame) -> pd.Series:
    return df["therapy_class"].eq("CAR-T")


def _is_bispecific(df: pd.DataFrame) -> pd.Series:
    return df["therapy_class"].eq("bispecific")


def _differs_from_product_table(df: pd.DataFrame, column: str, table: dict[str, str]) -> pd.Series:
    """True where the product is in ``table`` and ``column`` is given but is not its entry.

    Both columns hold few distinct values, so the comparison is made once per pair of values
    (a small grid) rather than per row: this runs on every chunk that is scored.
    """
    product_codes, products = pd.factorize(df["product"])
    given_codes, given = pd.factorize(df[column])
    expected = [table.get(product) for product in products]
    grid = np.array([[e is not None and g != e for g in given] for e in expected], dtype=bool)
    grid = grid.reshape(len(products), len(given))
    present = (product_codes >= 0) & (given_codes >= 0)
    differs = np.zeros(len(df), dtype=bool)
    differs[present] = grid[product_codes[present], given_codes[present]]
    return pd.Series(differs, index=df.index)


def _product_class_mismatch(df: pd.DataFrame) -> pd.Series:
    return _differs_from_product_table(df, "therapy_class", PRODUCT_CLASS)


def _costim_mismatch(df: pd.DataFrame) -> pd.Series:
    return _is_car_t(df) & _differs_from_product_table(df, "costim_domain", PRODUCT_COSTIM)


BASELINE_RULES: tuple[CrossRule, ...] = (
    CrossRule(
        "product",
        "product must belong to therapy_class (see the product table)",
        _product_class_mismatch,
    ),
    CrossRule(
        "costim_domain",
        "costim_domain must match the product's costimulatory domain",
        _costim_mismatch,
    ),
    *(
        CrossRule(
            name,
            f"{name} must be empty for bispecifics (CAR-T only)",
            lambda df, name=name: _is_bispecific(df) & df[name].notna(),
        )
        for name in CAR_T_ONLY
    ),
)


def _rule_check(rule: CrossRule) -> pa.Check:
    return pa.Check(lambda df: ~rule.broken(df), name=rule.words, error=rule.words)


def build_schema(
    specs: Sequence[ColumnSpec],
    *,
    rules: Sequence[CrossRule] = (),
    unique: str | None = "patient_id",
    today: dt.date | None = None,
) -> pa.DataFrameSchema:
    """A pandera schema for typed (already parsed) tables following ``specs``.

    Extra columns are allowed and left alone (``strict=False``).
    """
    today = today or dt.date.today()
    columns = {
        spec.name: pa.Column(
            _pandas_dtype(spec),
            checks=_column_checks(spec, today),
            nullable=spec.nullable,
            unique=spec.name == unique,
            required=True,
            report_duplicates="all",
        )
        for spec in specs
    }
    return pa.DataFrameSchema(
        columns,
        checks=[_rule_check(rule) for rule in rules],
        strict=False,
        name="crsrisk contract v1",
    )


@lru_cache(maxsize=4)
def baseline_schema(today: dt.date | None = None, with_outcome: bool = False) -> pa.DataFrameSchema:
    """The baseline table (section 1), optionally with the outcome columns (section 2)."""
    specs = BASELINE_COLUMNS + (OUTCOME_COLUMNS if with_outcome else ())
    return build_schema(specs, rules=BASELINE_RULES, today=today or dt.date.today())


@lru_cache(maxsize=1)
def events_schema() -> pa.DataFrameSchema:
    """The raw CRS event table (section 3)."""
    return build_schema(EVENT_COLUMNS)


def categorical_dtype(spec: ColumnSpec) -> pd.CategoricalDtype:
    """The fixed categorical dtype of a category column: unknown levels can never sneak in."""
    return pd.CategoricalDtype(list(spec.levels))


# ----------------------------------------------------------------------------------------------
# Parsing raw cells into contract dtypes
# ----------------------------------------------------------------------------------------------


@dataclass
class _Problems:
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
    text = col.astype("str").str.strip().where(col.notna())
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


def _parse_number(col: pd.Series, spec: ColumnSpec, problems: _Problems) -> pd.Series:
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


def _parse_bool(col: pd.Series, spec: ColumnSpec, problems: _Problems) -> pd.Series:
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


def _parse_date(col: pd.Series, spec: ColumnSpec, problems: _Problems) -> pd.Series:
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


def _parse_category(col: pd.Series, spec: ColumnSpec, problems: _Problems) -> pd.Series:
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


def _parse_text(col: pd.Series, spec: ColumnSpec, problems: _Problems) -> pd.Series:
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
) -> tuple[pd.DataFrame, _Problems]:
    """Cast the contract columns to their dtypes; unparseable cells become missing and a problem.

    Optional columns absent from the file are added as missing. Extra columns are untouched.
    """
    problems = _Problems()
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


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of validating one table (or one chunk of it)."""

    valid: pd.DataFrame  # typed rows that passed, index = 0-based row position in the file
    rejected: pd.DataFrame  # REJECTED_COLUMNS, one row per (row, column, rule)
    warnings: tuple[str, ...]
    n_read: int

    @property
    def n_rejected_rows(self) -> int:
        return int(self.rejected["row_number"].nunique())

    def rejected_by_rule(self) -> pd.Series:
        """How many rows broke each (column, rule)."""
        if self.rejected.empty:
            return pd.Series(dtype="int64")
        return self.rejected.groupby(["column", "check"]).size().sort_values(ascending=False)


def empty_rejected() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_number": pd.Series(dtype="int64"),
            "patient_id": pd.Series(dtype="str"),
            "column": pd.Series(dtype="str"),
            "check": pd.Series(dtype="str"),
            "value": pd.Series(dtype="str"),
        }
    )


def _raw_values(raw: pd.DataFrame, positions: np.ndarray, columns: np.ndarray) -> list[str]:
    values = []
    for pos, column in zip(positions, columns, strict=True):
        if column in raw.columns:
            value = raw[column].iat[pos]
            values.append("" if pd.isna(value) else str(value))
        else:
            values.append("")
    return values


def _rejected_frame(
    raw: pd.DataFrame,
    positions: np.ndarray,
    columns: np.ndarray,
    words: np.ndarray,
    row_offset: int,
) -> pd.DataFrame:
    if positions.size == 0:
        return empty_rejected()
    ids = raw["patient_id"] if "patient_id" in raw.columns else None
    patient_ids = (
        [None if pd.isna(v) else str(v) for v in ids.iloc[positions]]
        if ids is not None
        else [None] * positions.size
    )
    rejected = pd.DataFrame(
        {
            "row_number": (positions + 1 + row_offset).astype("int64"),
            "patient_id": pd.Series(patient_ids, dtype="str"),
            "column": pd.Series(columns, dtype="str"),
            "check": pd.Series(words, dtype="str"),
            "value": pd.Series(_raw_values(raw, positions, columns), dtype="str"),
        }
    )
    rejected = rejected.drop_duplicates(["row_number", "column"], keep="first")
    return rejected.sort_values(["row_number", "column"], kind="stable").reset_index(drop=True)


def _schema_failures(
    schema: pa.DataFrameSchema,
    parsed: pd.DataFrame,
    rules: Sequence[CrossRule],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if passes(schema, parsed):  # every check seen to pass: pandera would find nothing
        return np.array([], dtype=int), np.array([], dtype=object), np.array([], dtype=object)
    try:
        schema.validate(parsed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return np.array([], dtype=int), np.array([], dtype=object), np.array([], dtype=object)
    cases = cases[cases["index"].notna()]
    # A wide (cross-column) check is reported once per column; keep its own column only.
    rule_column = {rule.words: rule.column for rule in rules}
    owner = cases["check"].map(rule_column)
    cases = cases[owner.isna() | owner.eq(cases["column"])]
    cases = cases.replace({"check": {"not_nullable": "must not be missing",
                                     "field_uniqueness": "must be unique in the table"}})
    positions = parsed.index.get_indexer(cases["index"].astype("int64"))
    return positions, cases["column"].to_numpy(object), cases["check"].to_numpy(object)


def unit_warnings(parsed: pd.DataFrame) -> list[str]:
    """Whole-column checks for values that look like they are in the wrong unit."""
    rules = (
        ("crp_mg_l", lambda m: m < 1, "looks like mg/dL: multiply by 10, or map "
         "`units: {crp_mg_l: mg/dL}` in a --mapping file"),
        ("creatinine_mg_dl", lambda m: m > 20, "looks like umol/L: divide by 88.4, or map "
         "`units: {creatinine_mg_dl: umol/L}`"),
        ("platelets_1e9_l", lambda m: m > 5000, "looks like cells per uL: divide by 1000, or "
         "map `units: {platelets_1e9_l: per_uL}`"),
    )
    found = []
    for column, suspicious, advice in rules:
        if column in parsed.columns and parsed[column].notna().sum() >= 5:
            median = float(parsed[column].median())
            if suspicious(median):
                found.append(f"{column} median is {median:g}, which {advice}.")
    return found


def _fill_costim(valid: pd.DataFrame) -> pd.DataFrame:
    """CAR-T rows missing costim_domain take it from the product table."""
    from_product = valid["product"].map(PRODUCT_COSTIM)
    fill = _is_car_t(valid) & valid["costim_domain"].isna() & from_product.notna()
    if fill.any():
        valid = valid.assign(costim_domain=valid["costim_domain"].where(~fill, from_product))
    return valid


def _as_categorical(col: pd.Series, spec: ColumnSpec) -> pd.Series:
    """``col`` with the fixed levels of ``spec``, in their order (anything else missing).

    Text goes by Arrow's hash lookup, several times faster than pandas' astype on text.
    """
    if isinstance(col.dtype, pd.CategoricalDtype):
        # Not astype: unordered dtypes with the same levels in another order compare equal,
        # and astype would keep the order of this chunk.
        return col.cat.set_categories(list(spec.levels))
    levels = pyarrow.array(list(spec.levels), type=pyarrow.large_string())
    try:
        text = pyarrow.array(col, type=pyarrow.large_string(), from_pandas=True)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
        return col.astype(categorical_dtype(spec))
    codes = pc.index_in(text, value_set=levels).fill_null(-1).to_numpy(zero_copy_only=False)
    values = pd.Categorical.from_codes(codes.astype(np.int32), dtype=categorical_dtype(spec))
    return pd.Series(values, index=col.index, name=col.name)


def _to_categoricals(frame: pd.DataFrame, specs: Sequence[ColumnSpec]) -> pd.DataFrame:
    cats = {s.name: _as_categorical(frame[s.name], s) for s in specs if s.levels}
    return frame.assign(**cats)


def validate_table(
    raw: pd.DataFrame,
    specs: Sequence[ColumnSpec],
    schema: pa.DataFrameSchema,
    *,
    rules: Sequence[CrossRule] = (),
    row_offset: int = 0,
    table_name: str = "table",
    allow_all_rejected: bool = False,
    extra_problems: pd.DataFrame | None = None,
) -> ValidationResult:
    """Parse and validate ``raw`` against ``specs``; never raises for row-level problems."""
    if len(raw) == 0:
        raise ContractError(f"The {table_name} has no data rows: give at least one row.")
    duplicated = raw.columns[raw.columns.duplicated()].tolist()
    if duplicated:
        raise ContractError(
            f"The {table_name} has duplicated column names {duplicated}: rename or drop them."
        )
    missing = [s.name for s in specs if s.required and s.name not in raw.columns]
    if missing:
        raise ContractError(
            f"The {table_name} lacks required column(s) {', '.join(missing)}: add them, or rename "
            "the site's columns to the contract names with --mapping FILE."
        )
    raw = raw.reset_index(drop=True)
    parsed, problems = parse_columns(raw, specs)
    warnings = unit_warnings(parsed)
    positions, columns, words = _schema_failures(schema, parsed, rules)
    all_positions = np.concatenate([*problems.rows, positions]).astype(int)
    all_columns = np.concatenate(
        [*(np.full(len(r), c, dtype=object) for r, c in zip(problems.rows, problems.columns,
                                                             strict=True)), columns]
    )
    all_words = np.concatenate(
        [*(np.full(len(r), w, dtype=object) for r, w in zip(problems.rows, problems.words,
                                                            strict=True)), words]
    )
    rejected = _rejected_frame(raw, all_positions, all_columns, all_words, row_offset)
    if extra_problems is not None and not extra_problems.empty:
        rejected = pd.concat([extra_problems[list(REJECTED_COLUMNS)], rejected], ignore_index=True)
        rejected = rejected.drop_duplicates(["row_number", "column"], keep="first")
        rejected = rejected.sort_values(["row_number", "column"], kind="stable")
        rejected = rejected.reset_index(drop=True)
    bad_positions = rejected["row_number"].to_numpy() - 1 - row_offset
    keep = np.ones(len(parsed), dtype=bool)
    keep[bad_positions] = False
    valid = _to_categoricals(parsed[keep], specs)
    valid.index = valid.index + row_offset
    if valid.empty and not allow_all_rejected:
        top = rejected.groupby(["column", "check"]).size().sort_values(ascending=False)
        (column, words_), count = next(iter(top.items()))
        hint = f" {warnings[0]}" if warnings else ""
        raise ContractRejection(
            f"Every row of the {table_name} was rejected (most often: {column} {words_}, "
            f"{count} rows): fix the input, see the rejected table for each row.{hint}",
            rejected,
        )
    return ValidationResult(valid, rejected, tuple(warnings), len(raw))


def validate(
    df: pd.DataFrame,
    *,
    with_outcome: bool | None = None,
    row_offset: int = 0,
    today: dt.date | None = None,
    allow_all_rejected: bool = False,
    extra_problems: pd.DataFrame | None = None,
) -> ValidationResult:
    """Validate a baseline table (contract section 1) and, where present, its outcome columns.

    Parameters
    ----------
    df
        The table as read (text cells from CSV, or typed columns from Parquet).
    with_outcome
        Validate the outcome columns of section 2 too. None: when ``crs_max_grade`` is present.
    row_offset
        Rows before this chunk, so that row numbers count from the top of the file.
    today
        The latest allowed infusion_date (default: today).
    allow_all_rejected
        Return normally when every row is rejected (for one chunk of a longer file).
    extra_problems
        Rejected rows found earlier (e.g. by a site mapping) to merge in.

    Returns
    -------
    ValidationResult
        ``valid`` (typed; costim_domain filled from the product table for CAR-T) and
        ``rejected`` (row_number, patient_id, column, check, value).
    """
    if with_outcome is None:
        with_outcome = "crs_max_grade" in df.columns
    specs = BASELINE_COLUMNS + (OUTCOME_COLUMNS if with_outcome else ())
    schema = baseline_schema(today or dt.date.today(), with_outcome)
    result = validate_table(
        df,
        specs,
        schema,
        rules=BASELINE_RULES,
        row_offset=row_offset,
        table_name="baseline table",
        allow_all_rejected=allow_all_rejected,
        extra_problems=extra_problems,
    )
    return ValidationResult(
        _fill_costim(result.valid), result.rejected, result.warnings, result.n_read
    )


def validate_events(df: pd.DataFrame) -> ValidationResult:
    """Validate the raw CRS event table (contract section 3)."""
    return validate_table(df, EVENT_COLUMNS, events_schema(), table_name="event table")
