"""Site column mappings: a site's names, codes, units and date formats to those of the data
contract.

A mapping file (see configs/mapping.example.yaml; `crsrisk suggest-mapping` drafts one) is
applied to a raw table before contract validation: rename columns, recode values, convert
units, read dates, add constants. Whatever it cannot fix is left for the validator to reject, so
that every problem is reported with its row; a mapping entry whose source column the table lacks
is warned of, never skipped in silence.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pydantic
from pydantic_core import ErrorDetails

from crsrisk.config import load_yaml_model
from crsrisk.contract.header import fold
from crsrisk.contract.rejected import Source, conform_rejected, empty_rejected
from crsrisk.contract.spec import (
    BASELINE_COLUMNS,
    EVENT_COLUMNS,
    OUTCOME_COLUMNS,
    REJECTED_COLUMNS,
)
from crsrisk.errors import CrsriskError
from crsrisk.io import CsvDialect

__all__ = [
    "CONVERSIONS",
    "PROBLEM_COLUMNS",
    "MappedTable",
    "MappingError",
    "FileOptions",
    "SiteMapping",
    "apply_mapping",
    "load_mapping",
]

_SPECS = {c.name: c for c in (*BASELINE_COLUMNS, *OUTCOME_COLUMNS, *EVENT_COLUMNS)}
CONTRACT_COLUMNS: tuple[str, ...] = tuple(_SPECS)
PROBLEM_COLUMNS = REJECTED_COLUMNS
NEEDS_WEIGHT = "total cell dose needs weight_kg to convert to per kg"


class Conversion(NamedTuple):
    factor: float
    per_weight: bool  # divide by weight_kg as well (total dose -> dose per kg)
    why: str


# (contract column, site unit) -> conversion to the contract unit.
_SITE_UNITS: dict[tuple[str, str], Conversion] = {
    # The contract unit as the column name writes it.
    ("platelets_1e9_l", "1e9/L"): Conversion(1.0, False, "contract unit"),
    ("anc_1e9_l", "1e9/L"): Conversion(1.0, False, "contract unit"),
    ("cell_dose_1e6_per_kg", "1e6_per_kg"): Conversion(1.0, False, "contract unit"),
    ("crp_mg_l", "mg/dL"): Conversion(10.0, False, "1 dL = 0.1 L, so mg/dL x 10 = mg/L"),
    ("creatinine_mg_dl", "umol/L"): Conversion(
        1 / 88.4, False, "creatinine 113.12 g/mol: 88.4 umol/L = 1 mg/dL"
    ),
    ("platelets_1e9_l", "per_uL"): Conversion(1e-3, False, "1 /uL = 1e6 /L = 0.001 x 1e9/L"),
    ("platelets_1e9_l", "1e3_per_uL"): Conversion(1.0, False, "1e3/uL = 1e9/L"),
    ("anc_1e9_l", "per_uL"): Conversion(1e-3, False, "1 /uL = 1e6 /L = 0.001 x 1e9/L"),
    ("anc_1e9_l", "1e3_per_uL"): Conversion(1.0, False, "1e3/uL = 1e9/L"),
    ("marrow_blasts_pct", "fraction"): Conversion(100.0, False, "a fraction 0..1 x 100 = %"),
    ("marrow_plasma_cells_pct", "fraction"): Conversion(
        100.0, False, "a fraction 0..1 x 100 = %"
    ),
    ("hemoglobin_g_dl", "g/L"): Conversion(0.1, False, "1 L = 10 dL, so g/L / 10 = g/dL"),
    ("hemoglobin_g_dl", "mmol/L"): Conversion(
        1.611, False, "per haem monomer (16,114.5 g/mol): 1 mmol/L = 16.11 g/L = 1.611 g/dL"
    ),
    ("ferritin_ng_ml", "ug/L"): Conversion(1.0, False, "1 ug/L = 1 ng/mL"),
    ("cell_dose_1e6_per_kg", "cells_per_kg"): Conversion(1e-6, False, "cells/kg / 1e6"),
    ("cell_dose_1e6_per_kg", "total_cells"): Conversion(
        1e-6, True, "total cells / 1e6, then / weight in kg"
    ),
    ("cell_dose_1e6_per_kg", "total_1e6_cells"): Conversion(
        1.0, True, "total dose in 1e6 cells / weight in kg"
    ),
    ("cell_dose_1e6_per_kg", "total_1e8_cells"): Conversion(
        100.0, True, "1e8 cells = 100 x 1e6 cells, then / weight in kg"
    ),
    ("weight_kg", "lb"): Conversion(0.45359237, False, "1 lb = 0.45359237 kg exactly"),
}


# Every unit a mapping may name: the contract's own unit of each convertible column (factor 1,
# so that a site may state its units explicitly), then the site units.
CONVERSIONS: dict[tuple[str, str], Conversion] = {
    **{(column, _SPECS[column].unit): Conversion(1.0, False, "contract unit")
       for column in dict.fromkeys(c for c, _ in _SITE_UNITS)},
    **_SITE_UNITS,
}


class MappingError(CrsriskError, ValueError):
    """The mapping file itself is unusable (one sentence: what and how to fix)."""


class FileOptions(pydantic.BaseModel, frozen=True):
    """How to read the site's file, where sniffing the file is not enough."""

    model_config = pydantic.ConfigDict(extra="forbid")

    delimiter: str | None = None
    decimal: str | None = None
    sheet: str | None = None

    @pydantic.field_validator("delimiter", "decimal")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and len(value.replace("\\t", "\t")) != 1:
            raise MappingError(f"file options take one character, not {value!r}")
        return None if value is None else value.replace("\\t", "\t")

    def dialect(self, sniffed: CsvDialect) -> CsvDialect:
        """The CSV dialect: these options where given, else what was sniffed."""
        return CsvDialect(self.delimiter or sniffed.delimiter, self.decimal or sniffed.decimal)


class SiteMapping(pydantic.BaseModel, frozen=True):
    """A site's mapping to the data contract.

    Attributes
    ----------
    rename : dict of str to str
        Source column -> contract column.
    recode : dict of str to dict
        Contract column -> {source value: contract value}; source values match case-insensitively
        and ignoring surrounding spaces; a contract value of null recodes to missing.
    units : dict of str to str
        Contract column -> the unit the site's values are in (a unit of ``CONVERSIONS``).
    dates : dict of str to str
        Contract column -> the date format of the site's values (``%d.%m.%Y``, ``%m/%d/%Y``);
        ISO dates (YYYY-MM-DD, as spreadsheets deliver them) are read as well.
    constants : dict of str to str
        Contract column -> one value for every row (``therapy_class: CAR-T``): the column is
        added where the table lacks it, its missing cells filled where it has it.
    file : FileOptions
        How to read the file: CSV ``delimiter`` and ``decimal`` mark, Excel ``sheet``.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    rename: dict[str, str] = {}
    recode: dict[str, dict[str, str | None]] = {}
    units: dict[str, str] = {}
    dates: dict[str, str] = {}
    constants: dict[str, str] = {}
    file: FileOptions = FileOptions()

    @pydantic.field_validator("rename", "recode", "units", "dates", "constants", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value

    @pydantic.model_validator(mode="after")
    def _check(self) -> SiteMapping:
        for section, targets in (
            ("rename", self.rename.values()),
            ("recode", self.recode),
            ("units", self.units),
            ("dates", self.dates),
            ("constants", self.constants),
        ):
            for target in targets:
                if target not in _SPECS:
                    raise MappingError(
                        f"{section} names {target!r}, which is not a contract column"
                        f"{_nearest(target, CONTRACT_COLUMNS)}: use a column name that "
                        "`crsrisk contract` lists"
                    )
        for column, fmt in self.dates.items():
            if _SPECS[column].kind != "date":
                raise MappingError(f"dates names {column}, which is not a date column")
            if "%" not in fmt:
                raise MappingError(
                    f"date format {fmt!r} of {column} has no % codes: write it as %d.%m.%Y, "
                    "%m/%d/%Y or similar"
                )
        for column, value in self.constants.items():
            levels = _SPECS[column].levels
            if levels and value not in levels:
                raise MappingError(
                    f"constant {column}: {value!r} is not a level{_nearest(value, levels)}: "
                    f"use one of {', '.join(levels)}"
                )
        for target, n in Counter(self.rename.values()).items():
            if n > 1:
                sources = [s for s, t in self.rename.items() if t == target]
                raise MappingError(
                    f"rename maps {' and '.join(map(repr, sources))} both to {target!r}: keep "
                    "one source column per contract column"
                )
        for column, codes in self.recode.items():
            levels = _SPECS[column].levels
            for source, value in codes.items():
                if levels and value is not None and value not in levels:
                    raise MappingError(
                        f"recode of {column} maps {source!r} to {value!r}, which is not a level"
                        f"{_nearest(value, levels)}: use one of {', '.join(levels)}"
                    )
            keys = [_norm(k) for k in codes]
            clash = {k for k in keys if keys.count(k) > 1}
            if clash and len({codes[k] for k in codes if _norm(k) in clash}) > 1:
                raise MappingError(
                    f"recode of {column} maps source values that differ only in case or spaces "
                    f"({', '.join(map(repr, sorted(clash)))}) to different values: keep one"
                )
        for column, unit in self.units.items():
            valid = [u for c, u in CONVERSIONS if c == column]
            if not valid:
                convertible = sorted({c for c, _ in CONVERSIONS})
                raise MappingError(
                    f"units names {column}, which has no unit conversion: give it in the "
                    f"contract's unit, as units can convert only {', '.join(convertible)}"
                )
            if (column, unit) not in CONVERSIONS:
                raise MappingError(
                    f"unknown unit {unit!r} for {column}: use one of {', '.join(valid)}"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The mapping as plain dicts, as in the YAML file.

        The sections added after the first version (dates, constants, file) appear only when
        set, so that an older mapping keeps its fingerprint.
        """
        content = self.model_dump(include={"rename", "recode", "units"})
        for section in ("dates", "constants"):
            if getattr(self, section):
                content[section] = getattr(self, section)
        file = self.file.model_dump(exclude_none=True)
        if file:
            content["file"] = file
        return content

    def fingerprint(self) -> str:
        """SHA-256 of the mapping's canonical JSON (independent of key order)."""
        canonical = json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MappedTable:
    """A raw table mapped to the contract's names, codes and units.

    Attributes
    ----------
    frame : pandas.DataFrame
        The mapped table, still to be validated against the contract.
    problems : pandas.DataFrame
        Rejected-table rows (the columns of `spec.REJECTED_TABLE`) for cells the mapping could
        not convert and left missing.
    warnings : tuple of str
        Mapping entries whose source column the table lacks, and names matched only after
        trimming and case-folding.
    sources : dict of str to Source
        Contract column -> the site's column it came from, with its cells as the site wrote
        them (for the rejected table).
    """

    frame: pd.DataFrame
    problems: pd.DataFrame
    warnings: tuple[str, ...] = ()
    sources: dict[str, Source] = field(default_factory=dict)

    def validate_kwargs(self) -> dict[str, Any]:
        """What `contract.validate.validate` takes from a mapped table."""
        return {"extra_problems": self.problems, "sources": self.sources,
                "extra_warnings": self.warnings}


def load_mapping(path: str | Path) -> SiteMapping:
    """Read and check a site mapping file.

    Parameters
    ----------
    path : str or pathlib.Path
        YAML file with the sections ``rename``, ``recode`` and ``units``.

    Returns
    -------
    SiteMapping

    Raises
    ------
    MappingError
        If the file is missing or not valid YAML, has an unknown section, maps to a column
        that is not in the contract, names an unknown unit, or renames two columns to one.
    """
    return load_yaml_model(Path(path), SiteMapping, what="Mapping file", error=MappingError,
                           text=True, describe=_describe)


def apply_mapping(df: pd.DataFrame, mapping: SiteMapping, *, row_offset: int = 0) -> MappedTable:
    """Rename, recode, convert and date a raw table to the contract's names, codes and units.

    Values not in a recode are kept, and values that are not numbers are not converted, so that
    the contract validator rejects them by name. A total cell dose without a positive weight,
    or a date not in the mapping's format, cannot be converted: it becomes missing and is
    reported in ``problems``. Source columns match ignoring case and surrounding spaces; an
    entry whose source the table lacks is named in ``warnings``. Columns the mapping does not
    name pass through untouched; the input frame is not modified.

    Parameters
    ----------
    df : pandas.DataFrame
        Raw table, with cells as read from CSV (strings) or typed from Parquet.
    mapping : SiteMapping
    row_offset : int, default 0
        Added to row numbers in ``problems`` (rows of ``df`` before this chunk of a file).

    Returns
    -------
    MappedTable

    Raises
    ------
    MappingError
        If a rename gives a column the name of a column the table already has.
    """
    warnings: list[str] = []
    rename, native = _resolve_sources(df.columns, mapping.rename, warnings)
    frame = df.rename(columns=rename)
    duplicated = frame.columns[frame.columns.duplicated()].unique()
    if len(duplicated):
        raise MappingError(
            f"renaming gives two columns the name {', '.join(map(repr, duplicated))}: drop the "
            "rename or the table's own column of that name"
        )
    source_of = {target: source for source, target in rename.items()}
    sources = {
        column: Source(source_of.get(column, column), df[source_of.get(column, column)],
                       mapping.units.get(column, ""))
        for column in {*rename.values(), *mapping.units, *mapping.recode, *mapping.dates}
        if source_of.get(column, column) in df.columns
    }
    for section, columns in (("recode", mapping.recode), ("units", mapping.units),
                             ("dates", mapping.dates)):
        for column in columns:
            if column not in frame.columns:
                warnings.append(f"mapping {section} names {column}, which the table does not "
                                "have (nor does any rename give it): nothing was converted")
            elif column in native and section != "recode":
                warnings.append(f"mapping {section} for {column} describe the rename's absent "
                                f"source, so the table's own {column} is not converted")
    units = {c: u for c, u in mapping.units.items() if c not in native}
    dates = {c: f for c, f in mapping.dates.items() if c not in native}
    for column, codes in mapping.recode.items():
        if column in frame.columns:
            frame[column] = _recode(frame[column], codes)

    problems = []
    # Weight first: a total cell dose is divided by the weight in kg.
    for column, unit in sorted(units.items(), key=lambda cu: CONVERSIONS[cu].per_weight):
        if column not in frame.columns:
            continue
        conversion = CONVERSIONS[(column, unit)]
        weight = None
        if conversion.per_weight and "weight_kg" in frame.columns:
            weight = _numbers(frame["weight_kg"])
        original = frame[column]
        frame[column], unconverted = _convert(original, conversion, weight)
        if unconverted.any():
            problems.append(_problems(frame, column, original, unconverted, row_offset,
                                      NEEDS_WEIGHT, sources.get(column)))
    for column, fmt in dates.items():
        if column in frame.columns:
            original = frame[column]
            frame[column], unread = _dates(original, fmt)
            if unread.any():
                problems.append(_problems(
                    frame, column, original, unread, row_offset,
                    f"must be a date written as {fmt} (the mapping's format) or YYYY-MM-DD",
                    sources.get(column)))
    for column, value in mapping.constants.items():
        if column in frame.columns:
            warnings.append(f"mapping constants sets {column} to {value!r} where the table "
                            "leaves it missing (the table's own values are kept)")
            frame[column] = frame[column].where(frame[column].notna(), value)
        else:
            frame[column] = pd.Series(value, index=frame.index, dtype="str")
    return MappedTable(
        frame=frame,
        problems=pd.concat(problems, ignore_index=True) if problems else empty_rejected(),
        warnings=tuple(warnings),
        sources=sources,
    )


def _resolve_sources(
    columns: pd.Index, rename: dict[str, str], warnings: list[str]
) -> tuple[dict[str, str], set[str]]:
    """The rename with each source as the table spells it, and the contract columns the table
    has under their own name while the rename's source for them is absent. Absent sources are
    warned of."""
    present = {str(c) for c in columns}
    folded: dict[str, str] = {}
    for column in present:
        folded.setdefault(fold(column), column)
    resolved, native = {}, set()
    for source, target in rename.items():
        if source in present:
            resolved[source] = target
        elif fold(source) in folded:
            found = folded[fold(source)]
            resolved[found] = target
            warnings.append(f"mapping rename {source!r} matched the table's column {found!r} "
                            "(ignoring case and surrounding spaces)")
        elif target in present:
            native.add(target)
            warnings.append(f"mapping rename {source!r} -> {target}: the table has no column "
                            f"{source!r}; its own {target} column is used as it is")
        else:
            warnings.append(f"mapping rename {source!r} -> {target}: the table has no column "
                            f"{source!r}{_nearest(source, sorted(present))}, so {target} is "
                            "not read from it")
    return resolved, native


def _dates(values: pd.Series, fmt: str) -> tuple[pd.Series, pd.Series]:
    """Dates in ``fmt`` (or ISO) as YYYY-MM-DD text, and the mask of cells read as neither."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values, pd.Series(False, index=values.index)
    text = values.astype("str").str.strip().where(values.notna())
    text = text.where(text.ne(""))
    stamps = pd.to_datetime(text, format=fmt, errors="coerce")
    iso = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}(?:[T ].*)?").fillna(False).astype(bool)
    stamps = stamps.where(~(stamps.isna() & iso),
                          pd.to_datetime(text.where(iso), format="ISO8601", errors="coerce"))
    unread = text.notna() & stamps.isna()
    out = stamps.dt.strftime("%Y-%m-%d").astype("str")
    return out.where(stamps.notna()), unread


def _recode(values: pd.Series, codes: dict[str, str | None]) -> pd.Series:
    lookup = {_norm(k): v for k, v in codes.items()}
    text = values.astype("str")
    key = text.str.strip().str.casefold()
    hit = key.isin(set(lookup)) & values.notna()
    if not hit.any():
        return values
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = text  # new values may not be categories
    elif not pd.api.types.is_string_dtype(values.dtype):
        values = values.astype(object)  # e.g. integer codes from Parquet
    return values.where(~hit, key.map(lookup))


def _numbers(values: pd.Series) -> pd.Series:
    """Numeric values as float, NaN where missing or not a number."""
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _convert(
    values: pd.Series, conversion: Conversion, weight: pd.Series | None
) -> tuple[pd.Series, pd.Series]:
    """Converted column, and the mask of values that needed a weight and had none."""
    numbers = _numbers(values)
    converted = numbers * conversion.factor
    unconverted = pd.Series(False, index=values.index)
    if conversion.per_weight:
        converted = converted / (weight.where(weight > 0) if weight is not None else np.nan)
        unconverted = numbers.notna() & converted.isna()
    if (values.notna() & numbers.isna()).any():
        # Some values are not numbers: keep them as they are, for the validator to reject.
        mixed = values.astype(object).where(numbers.isna(), converted)
        return mixed.where(~unconverted, np.nan), unconverted
    return converted, unconverted


def _problems(
    frame: pd.DataFrame,
    column: str,
    original: pd.Series,
    mask: pd.Series,
    row_offset: int,
    words: str,
    source: Source | None,
) -> pd.DataFrame:
    positions = np.flatnonzero(mask.to_numpy())
    ids = frame["patient_id"] if "patient_id" in frame.columns else pd.Series(np.nan, frame.index)
    value = original.iloc[positions].astype("str").to_numpy()
    return conform_rejected(pd.DataFrame(
        {
            "row_number": positions + 1 + row_offset,
            "patient_id": ids.iloc[positions].astype("str").to_numpy(),
            "column": column,
            "check": words,
            "value": value,
            "action": "rejected",
            "source_column": source.column if source else column,
            "source_value": [source.shown(p) for p in positions] if source else value,
        }
    ))


def _norm(code: str) -> str:
    return str(code).strip().casefold()


def _nearest(name: str, candidates: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _describe(error: ErrorDetails) -> str:
    """The words after "Mapping file PATH" for pydantic's first error: an unknown section with
    the nearest one, or where the layout is broken."""
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
        sections = tuple(SiteMapping.model_fields)
        return (f"has an unknown section {where!r}{_nearest(where, sections)}: the sections "
                f"are {', '.join(sections)}.")
    if error["type"] == "extra_forbidden" and error["loc"][0] == "file":
        name, options = str(error["loc"][-1]), tuple(FileOptions.model_fields)
        return (f"has an unknown file option {name!r}{_nearest(name, options)}: the options "
                f"are {', '.join(options)}.")
    return (f"is malformed at {where or 'the top level'} ({error['msg']}): see "
            "configs/mapping.example.yaml for the layout.")
