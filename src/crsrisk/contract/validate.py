"""The data contract as pandera schemas, and `validate`: typed valid rows plus a rejected table.

Row-level problems never raise: each lands in the rejected table with its 1-based row number,
patient_id, column, the rule in words, the offending value and the action taken. An implausible
laboratory value (out of its range) is set to missing and the row kept (``blanked``), unless
``strict``; every other problem rejects the row. Table-level problems (empty, a required column
missing, a column twice, every row invalid) raise ContractError with one sentence.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

from crsrisk.contract.header import match_header
from crsrisk.contract.parse import (
    FALSE_WORDS,
    PARSERS,
    TRUE_WORDS,
    parse_columns,
    stripped_text,
)
from crsrisk.contract.products import PRODUCTS
from crsrisk.contract.rejected import (
    BLANKED,
    REJECTED,
    WHOLE_ROW,
    Source,
    empty_rejected,
    merge_rejected,
    rejected_frame,
)
from crsrisk.contract.screen import narrowed, unproven
from crsrisk.contract.small import clean_rows
from crsrisk.contract.spec import (
    BASELINE_COLUMNS,
    CAR_T_ONLY,
    EVENT_COLUMNS,
    FIRST_INFUSION_DATE,
    OUTCOME_COLUMNS,
    REJECTED_COLUMNS,
    ColumnSpec,
)
from crsrisk.errors import ContractError
from crsrisk.io import BAD_ROWS

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
    """A rule between columns; a row breaking it is reported against ``column``.

    ``broken`` decides a table's rows at once; ``broken_row`` one row given as a dict of
    values (None where missing), for the cell-by-cell path of small tables (contract.small).
    """

    column: str
    words: str
    broken: Callable[[pd.DataFrame], pd.Series]
    broken_row: Callable[[Mapping[str, object]], bool]


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


def _differs_in_row(row: Mapping[str, object], column: str, table: dict[str, str]) -> bool:
    expected = table.get(row["product"])
    return expected is not None and row[column] is not None and row[column] != expected


BASELINE_RULES: tuple[CrossRule, ...] = (
    CrossRule(
        "product",
        "product must belong to therapy_class (see the product table)",
        _product_class_mismatch,
        lambda row: _differs_in_row(row, "therapy_class", PRODUCT_CLASS),
    ),
    CrossRule(
        "costim_domain",
        "costim_domain must match the product's costimulatory domain",
        _costim_mismatch,
        lambda row: (row["therapy_class"] == "CAR-T"
                     and _differs_in_row(row, "costim_domain", PRODUCT_COSTIM)),
    ),
    *(
        CrossRule(
            name,
            f"{name} must be empty for bispecifics (CAR-T only)",
            lambda df, name=name: _is_bispecific(df) & df[name].notna(),
            lambda row, name=name: row["therapy_class"] == "bispecific" and row[name] is not None,
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
        """Rows not used (each may break several rules)."""
        rejected = self.rejected["action"].eq(REJECTED)
        return int(self.rejected.loc[rejected, "row_number"].nunique())

    @property
    def n_blanked(self) -> int:
        """Implausible values set to missing in rows that were used."""
        return int(self.rejected["action"].eq(BLANKED).sum())

    def rejected_by_rule(self) -> pd.Series:
        """How many rows broke each (column, rule, action)."""
        if self.rejected.empty:
            return pd.Series(dtype="int64")
        counts = self.rejected.groupby(["column", "check", "action"]).size()
        return counts.sort_values(ascending=False)


def _schema_failures(
    schema: pa.DataFrameSchema,
    parsed: pd.DataFrame,
    rules: Sequence[CrossRule],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    which = unproven(schema, parsed)
    if not which:  # every check seen to pass: pandera would find nothing
        return np.array([], dtype=int), np.array([], dtype=object), np.array([], dtype=object)
    try:
        # pandera on the columns and wide checks the screen could not see pass, only.
        narrowed(schema, which).validate(parsed, lazy=True)
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


def _blankable(
    specs: Sequence[ColumnSpec], parsed: pd.DataFrame, columns: np.ndarray, words: np.ndarray
) -> np.ndarray:
    """Which (column, rule) failures are an implausible laboratory value, to be blanked.

    Where most of a column's values (of at least 5) are out of range, the column is in another
    unit or mapped from the wrong source: its rows are rejected, not quietly blanked.
    """
    range_words = {s.name: _range_words(s) for s in specs if s.lab and s.nullable}
    blank = np.array([range_words.get(c) == w for c, w in zip(columns, words, strict=True)],
                     dtype=bool)
    for column in np.unique(columns[blank]):
        here = blank & (columns == column)
        present = int(parsed[column].notna().sum())
        if present >= 5 and here.sum() > present / 2:
            blank[here] = False
    return blank


def _bad_row_problems(raw: pd.DataFrame, row_offset: int) -> tuple[np.ndarray, list[str]]:
    """Rows the reader could not read (too few or too many fields), from ``attrs[BAD_ROWS]``:
    0-based rows of the file, so at ``row - row_offset`` in this chunk."""
    bad = raw.attrs.get(BAD_ROWS) or {}
    items = sorted((int(k) - row_offset, v) for k, v in bad.items()
                   if 0 <= int(k) - row_offset < len(raw))
    return np.array([k for k, _ in items], dtype=int), [v for _, v in items]


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
    fill = valid["costim_domain"].isna().to_numpy() & _is_car_t(valid).to_numpy()
    if not fill.any():  # most tables: nothing to look up
        return valid
    from_product = valid["product"].map(PRODUCT_COSTIM)
    fill &= from_product.notna().to_numpy()
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
    strict: bool = False,
    sources: Mapping[str, Source] | None = None,
    extra_warnings: Sequence[str] = (),
) -> ValidationResult:
    """Parse and validate ``raw`` against ``specs``; never raises for row-level problems.

    Column names match ignoring case and surrounding spaces (each such match is warned of). An
    implausible value of an optional laboratory column is blanked, or with ``strict`` rejects
    its row. ``sources`` say where each column came from, for the rejected table.
    """
    if len(raw) == 0:
        raise ContractError(f"The {table_name} has no data rows: give at least one row.")
    duplicated = raw.columns[raw.columns.duplicated()].tolist()
    if duplicated:
        raise ContractError(
            f"The {table_name} has duplicated column names {duplicated}: rename or drop them."
        )
    bad_positions, bad_words = _bad_row_problems(raw, row_offset)
    renames, header_warnings = match_header(raw.columns, [s.name for s in specs],
                                            table=table_name)
    if renames:
        raw = raw.rename(columns=renames)
    missing = [s.name for s in specs if s.required and s.name not in raw.columns]
    if missing:
        raise ContractError(
            f"The {table_name} lacks required column(s) {', '.join(missing)}: add them, or map "
            "the site's own columns to them with --mapping FILE (crsrisk suggest-mapping "
            "writes one to review; crsrisk contract lists every column)."
        )
    raw = raw.reset_index(drop=True)
    parsed, problems = parse_columns(raw, specs)
    units = unit_warnings(parsed)
    warnings = [*extra_warnings, *header_warnings, *units]
    positions, columns, words = _schema_failures(schema, parsed, rules)
    blank = (np.zeros(len(columns), bool) if strict
             else _blankable(specs, parsed, columns, words))
    for column in np.unique(columns[blank]):
        at = positions[blank & (columns == column)]
        parsed[column] = parsed[column].mask(np.isin(np.arange(len(parsed)), at))
    all_positions = np.concatenate([bad_positions, *problems.rows, positions]).astype(int)
    all_columns = np.concatenate([
        np.full(len(bad_positions), WHOLE_ROW, dtype=object),
        *(np.full(len(r), c, dtype=object) for r, c in zip(problems.rows, problems.columns,
                                                           strict=True)),
        columns,
    ])
    all_words = np.concatenate([
        np.array(bad_words, dtype=object),
        *(np.full(len(r), w, dtype=object) for r, w in zip(problems.rows, problems.words,
                                                          strict=True)),
        words,
    ])
    actions = np.full(len(all_positions), REJECTED, dtype=object)
    actions[len(all_positions) - len(positions):][blank] = BLANKED
    found = rejected_frame(raw, all_positions, all_columns, all_words, actions, row_offset,
                           sources)
    if bad_positions.size:
        # An unread row is reported once, for what it is, not for each cell it lacks.
        unread = found["row_number"].isin(bad_positions + 1 + row_offset)
        found = found[~unread | found["column"].eq(WHOLE_ROW)]
    rejected = merge_rejected(extra_problems, found)
    # A row rejected for any reason is not used: none of its values was blanked.
    rejected_rows = rejected.loc[rejected["action"].eq(REJECTED), "row_number"]
    rejected.loc[rejected["row_number"].isin(rejected_rows), "action"] = REJECTED
    keep = np.ones(len(parsed), dtype=bool)
    keep[rejected_rows.to_numpy() - 1 - row_offset] = False
    valid = _to_categoricals(parsed[keep], specs)
    valid.index = valid.index + row_offset
    if valid.empty and not allow_all_rejected:
        top = rejected.groupby(["column", "check"]).size().sort_values(ascending=False)
        (column, words_), count = next(iter(top.items()))
        hint = f" {(units or warnings)[0]}" if units or warnings else ""
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
    strict: bool = False,
    sources: Mapping[str, Source] | None = None,
    extra_warnings: Sequence[str] = (),
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
    strict
        Reject a row with an implausible laboratory value instead of blanking the value.
    sources
        Where each contract column came from in the file (`MappedTable.sources`), so that
        rejected and blanked values are also shown as the file wrote them.
    extra_warnings
        Warnings found earlier (e.g. by a site mapping), to report with the others.

    Returns
    -------
    ValidationResult
        ``valid`` (typed; costim_domain filled from the product table for CAR-T; blanked
        values missing) and ``rejected`` (the columns of `spec.REJECTED_TABLE`).
    """
    if with_outcome is None:
        with_outcome = "crs_max_grade" in df.columns
    specs = BASELINE_COLUMNS + (OUTCOME_COLUMNS if with_outcome else ())
    today = today or dt.date.today()
    if extra_problems is None or extra_problems.empty:
        clean = clean_rows(df, specs, today=today, rules=[r.broken_row for r in BASELINE_RULES],
                           row_offset=row_offset)
        if clean is not None:
            warnings = (*extra_warnings, *unit_warnings(clean))
            return ValidationResult(_fill_costim(clean), empty_rejected(), warnings, len(df))
    schema = baseline_schema(today, with_outcome)
    result = validate_table(
        df,
        specs,
        schema,
        rules=BASELINE_RULES,
        row_offset=row_offset,
        table_name="baseline table",
        allow_all_rejected=allow_all_rejected,
        extra_problems=extra_problems,
        strict=strict,
        sources=sources,
        extra_warnings=extra_warnings,
    )
    return ValidationResult(
        _fill_costim(result.valid), result.rejected, result.warnings, result.n_read
    )


def validate_events(df: pd.DataFrame) -> ValidationResult:
    """Validate the raw CRS event table (contract section 3)."""
    return validate_table(df, EVENT_COLUMNS, events_schema(), table_name="event table")
