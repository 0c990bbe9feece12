"""`crsrisk suggest-mapping`: a draft site mapping, read from a site's own file, for a person to
review. Every entry carries its evidence and a confidence (high, medium, low) as a comment.

Column names are matched by a synonym table, then fuzzily (rapidfuzz); units are read from the
header text ("CRP (mg/dL)", ``kreatinin_umol_l``), else inferred from the values and said so;
codes are recoded (Female/Male, ja/nein, long diagnosis names, brand names); date formats are
inferred from the values; constants are proposed where a required column is absent but implied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from rapidfuzz import fuzz, process

from crsrisk.contract.header import fold
from crsrisk.contract.parse import FALSE_WORDS, TRUE_WORDS
from crsrisk.contract.products import PRODUCTS
from crsrisk.contract.spec import BASELINE_COLUMNS, OUTCOME_COLUMNS, ColumnSpec
from crsrisk.contract.synonyms import COLUMN_SYNONYMS, HEADER_UNITS, VALUE_SYNONYMS
from crsrisk.io import read_table, sniff_csv, table_format

__all__ = ["Suggestion", "suggest_mapping", "DATE_FORMATS"]

DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y", "%Y/%m/%d",
                "%d.%m.%y", "%d/%m/%y", "%m/%d/%y")
_SPECS = {s.name: s for s in (*BASELINE_COLUMNS, *OUTCOME_COLUMNS)}
FUZZY_CUTOFF = 80


def _key(name: str) -> str:
    """A header as compared: lower case, units in brackets dropped, non-alphanumerics as _."""
    name = re.sub(r"[(\[].*?[)\]]", " ", str(name).lower())
    return re.sub(r"[^0-9a-zäöüß]+", "_", name).strip("_")


@dataclass
class Suggestion:
    """A drafted mapping and what it could not find."""

    rename: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # src: (dst, conf, why)
    units: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    recode: dict[str, tuple[dict[str, str], str]] = field(default_factory=dict)
    dates: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    constants: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    file: dict[str, tuple[str, str]] = field(default_factory=dict)
    missing_required: dict[str, list[str]] = field(default_factory=dict)
    missing_optional: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 every column mapped, 1 some optional ones not, 2 a required one not."""
        return 2 if self.missing_required else 1 if self.missing_optional else 0

    def to_yaml(self, source: str) -> str:
        """The mapping file, every entry commented with its confidence and evidence."""
        out = [f"# Site mapping drafted by `crsrisk suggest-mapping` from {source}.",
               "# Review every entry (confidence: high, medium, low), then use it with",
               "#   crsrisk validate FILE --mapping THIS_FILE",
               "# Every scalar is read as text; null recodes a value to missing."]
        if self.missing_required:
            out.append("# NOT FOUND (required): " + "; ".join(
                f"{c} (closest: {', '.join(v) or 'none'})"
                for c, v in self.missing_required.items()))
        if self.missing_optional:
            out.append("# not found (optional, left missing): "
                       + ", ".join(self.missing_optional))
        if self.unused:
            out.append("# file columns not mapped (carried through untouched): "
                       + ", ".join(self.unused))
        out.append("")

        def scalar(value: str) -> str:
            return yaml.safe_dump(value, default_style=None, width=1000).split("\n")[0]

        def section(name: str, entries: dict[str, tuple[str, str, str]]) -> None:
            out.append(f"{name}:" + ("" if entries else " {}"))
            for key, (value, confidence, why) in entries.items():
                out.append(f"  {scalar(key)}: {scalar(value)}  # {confidence}: {why}")
            out.append("")

        section("rename", self.rename)
        section("units", self.units)
        section("dates", self.dates)
        section("constants", self.constants)
        out.append("recode:" + ("" if self.recode else " {}"))
        for column, (codes, why) in self.recode.items():
            out.append(f"  {column}:  # {why}")
            for key, value in codes.items():
                out.append(f"    {scalar(key)}: {scalar(value)}")
        out.append("")
        out.append("file:" + ("" if self.file else " {}"))
        for key, (value, why) in self.file.items():
            out.append(f"  {key}: {scalar(value)}  # {why}")
        return "\n".join(out) + "\n"


def _match_columns(columns: list[str]) -> dict[str, tuple[str, str, str, float]]:
    """Contract column -> (file column, confidence, evidence, score), each file column once."""
    names = {syn: target for target, syns in COLUMN_SYNONYMS.items() for syn in syns}
    names.update({target: target for target in COLUMN_SYNONYMS})
    candidates = []
    for column in columns:
        key = _key(column)
        if not key:
            continue
        if key in names:
            candidates.append((100.0, column, names[key], "high", f"{column!r} is a known name"))
            continue
        # A contract name with its unit: crp_mg_l in "CRP_mg_L", kreatinin in kreatinin_umol_l.
        prefix = [(syn, t) for syn, t in names.items() if len(syn) > 2
                  and (key.startswith(syn + "_") or key.endswith("_" + syn))]
        if prefix:
            syn, target = max(prefix, key=lambda st: len(st[0]))
            candidates.append((95.0, column, target, "high",
                               f"{column!r} names {syn!r} (with its unit)"))
            continue
        best = process.extractOne(key, list(names), scorer=fuzz.ratio)
        if best and best[1] >= FUZZY_CUTOFF:
            candidates.append((best[1], column, names[best[0]], "medium",
                               f"{column!r} is close to {best[0]!r} ({best[1]:.0f}% similar)"))
    chosen: dict[str, tuple[str, str, str, float]] = {}
    used: set[str] = set()
    for score, column, target, confidence, why in sorted(candidates, key=lambda c: -c[0]):
        if target in chosen or column in used:
            continue
        chosen[target] = (column, confidence, why, score)
        used.add(column)
    return chosen


def _numbers(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").dropna()


def _unit(spec: ColumnSpec, column: str, values: pd.Series) -> tuple[str, str, str] | None:
    """(unit, confidence, evidence) of a numeric column, from its header or its values."""
    header = str(column).lower()
    for target, pattern, unit in HEADER_UNITS:
        if target == spec.name and re.search(pattern, header):
            return unit, "high", f"the header {column!r} states the unit"
    numbers = _numbers(values)
    if len(numbers) < 3:
        return None
    median, top = float(numbers.median()), float(numbers.max())
    said = f"inferred from the values (median {median:g}; the header gives no unit)"
    guesses = {
        "hemoglobin_g_dl": ("g/L", median > 30),
        "creatinine_mg_dl": ("umol/L", median > 20),
        "platelets_1e9_l": ("per_uL", median > 5000),
        "anc_1e9_l": ("per_uL", median > 500),
        "marrow_blasts_pct": ("fraction", top <= 1 and median < 1),
        "marrow_plasma_cells_pct": ("fraction", top <= 1 and median < 1),
        "cell_dose_1e6_per_kg": ("cells_per_kg", median > 1e4),
        "crp_mg_l": ("mg/dL", median < 1),
    }
    unit, applies = guesses.get(spec.name, ("", False))
    return (unit, "low", said) if applies else None


def _date_format(values: pd.Series) -> tuple[str, str, str] | None:
    text = values.dropna().astype("str").str.strip()
    text = text[text.ne("")]
    if text.empty or text.str.fullmatch(r"\d{4}-\d{2}-\d{2}.*").all():
        return None
    fits = [f for f in DATE_FORMATS
            if pd.to_datetime(text, format=f, errors="coerce").notna().all()]
    if not fits:
        return None
    sample = text.iloc[0]
    if len(fits) > 1:
        return fits[0], "low", (f"values such as {sample!r} fit {' and '.join(fits)}: check "
                                "which the site uses")
    return fits[0], "high", f"every value fits {fits[0]} (e.g. {sample!r})"


def _recode(spec: ColumnSpec, values: pd.Series) -> tuple[dict[str, str], list[str]]:
    """Codes for the distinct values the validator would not read as they are, and those left."""
    known = VALUE_SYNONYMS.get(spec.name, {})
    levels = {level.lower() for level in spec.levels}
    codes, unknown = {}, []
    for value in sorted({str(v).strip() for v in values.dropna()} - {""}):
        low = value.lower()
        if spec.kind == "bool" and low in TRUE_WORDS | FALSE_WORDS:
            continue
        if low in levels and spec.name != "sex":
            continue
        if spec.name == "sex" and low in ("f", "m"):
            continue
        if low in known:
            codes[value] = known[low]
            continue
        if spec.levels:
            best = process.extractOne(low, list(known) + list(levels), scorer=fuzz.WRatio)
            if best and best[1] >= 90:
                target = known.get(best[0]) or next(
                    level for level in spec.levels if level.lower() == best[0])
                codes[value] = target
                continue
        unknown.append(value)
    return codes, unknown


def suggest_mapping(path: str | Path, *, sheet: str | None = None) -> Suggestion:
    """Draft a mapping of the file at ``path`` to the data contract.

    Parameters
    ----------
    path
        The site's file: CSV (any common delimiter, decimal commas), Excel or Parquet.
    sheet
        The Excel sheet (default the first).

    Returns
    -------
    Suggestion
        The entries with their evidence; ``exit_code`` says whether every column was found.
    """
    path = Path(path)
    suggestion = Suggestion()
    if table_format(path) == "csv":
        dialect = sniff_csv(path)
        if dialect.delimiter != ",":
            suggestion.file["delimiter"] = (dialect.delimiter, f"sniffed: {dialect.describe()}")
        if dialect.decimal != ".":
            suggestion.file["decimal"] = (dialect.decimal, "sniffed: numbers such as 1,5")
    elif sheet is not None:
        suggestion.file["sheet"] = (sheet, "given with --sheet")
    raw = read_table(path, sheet=sheet)
    columns = [str(c) for c in raw.columns]
    matched = _match_columns(columns)
    for target, (column, confidence, why, _) in matched.items():
        spec = _SPECS[target]
        if column != target:
            suggestion.rename[column] = (target, confidence, why)
        values = raw[column]
        if spec.kind in ("float", "int"):
            unit = _unit(spec, column, values)
            if unit and unit[0] not in ("", spec.unit):
                suggestion.units[target] = unit
        elif spec.kind == "date":
            fmt = _date_format(values)
            if fmt and fmt[0] != "%Y-%m-%d":
                suggestion.dates[target] = fmt
        elif spec.kind in ("category", "bool"):
            codes, unknown = _recode(spec, values)
            if codes:
                why = "site codes to contract codes"
                if unknown:
                    why += f"; NOT recoded, will be rejected: {', '.join(unknown[:5])}"
                suggestion.recode[target] = (codes, why)
    _propose_constants(suggestion, raw, matched)
    present = set(matched) | set(suggestion.constants)
    for spec in (*BASELINE_COLUMNS, *OUTCOME_COLUMNS):
        if spec.name in present:
            continue
        if spec.required:
            close = process.extract(spec.name, columns, scorer=fuzz.WRatio, limit=3)
            suggestion.missing_required[spec.name] = [c for c, score, _ in close if score > 40]
        elif spec.name not in ("crs_max_grade", "crs_grading_scale"):
            suggestion.missing_optional.append(spec.name)
    used = {m[0] for m in matched.values()}
    suggestion.unused = [c for c in columns if c not in used]
    return suggestion


def _propose_constants(suggestion: Suggestion, raw: pd.DataFrame,
                       matched: dict[str, tuple[str, str, str, float]]) -> None:
    """therapy_class from the products; the grading scale where grades are given alone."""
    if "therapy_class" not in matched and "product" in matched:
        column = matched["product"][0]
        codes = suggestion.recode.get("product", ({}, ""))[0]
        products = {codes.get(str(v).strip(), str(v).strip()) for v in raw[column].dropna()}
        folded = {fold(p): p for p in PRODUCTS}
        classes = {PRODUCTS[folded[fold(p)]].therapy_class for p in products if fold(p) in folded}
        if len(classes) == 1:
            value = classes.pop()
            suggestion.constants["therapy_class"] = (
                value, "high", f"every product in {column!r} is a {value}")
    if "crs_max_grade" in matched and "crs_grading_scale" not in matched:
        suggestion.constants["crs_grading_scale"] = (
            "ASTCT", "low", "grades given without their scale: check it is ASTCT 2019")
