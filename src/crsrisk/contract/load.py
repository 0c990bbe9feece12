"""Reading a user's table end to end: file -> site mapping -> contract validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from crsrisk.contract.mapping import SiteMapping, apply_mapping, load_mapping
from crsrisk.contract.validate import ValidationResult, validate, validate_events
from crsrisk.io import read_table, sniff_csv, table_format

__all__ = ["LoadedTable", "site_read_options", "read_site_table", "map_and_validate",
           "load_baseline", "load_events"]


@dataclass(frozen=True)
class LoadedTable:
    """A validated table and what it came from (recorded wherever results are)."""

    result: ValidationResult
    path: Path
    mapping: SiteMapping | None

    @property
    def provenance(self) -> dict[str, str]:
        """Where the rows came from, free of patient data."""
        return {
            "input_file": self.path.name,
            "mapping_fingerprint": self.mapping.fingerprint() if self.mapping else "none",
        }


def site_read_options(
    path: str | Path, mapping: SiteMapping | None = None, sheet: str | None = None
) -> dict[str, Any]:
    """How to read a site's file (``sheet`` and ``dialect``, as ``crsrisk.io.iter_table`` takes
    them): the mapping's file options (delimiter, decimal mark, sheet) where it gives them, a
    ``sheet`` given here before the mapping's."""
    options = mapping.file if mapping is not None else None
    dialect = None
    if table_format(path) == "csv" and options is not None:
        dialect = options.dialect(sniff_csv(path))
    if table_format(path) == "excel":
        sheet = sheet if sheet is not None else (options.sheet if options else None)
    return {"sheet": sheet, "dialect": dialect}


def read_site_table(
    path: str | Path, mapping: SiteMapping | None = None, *, sheet: str | None = None
) -> pd.DataFrame:
    """Read a site's file as text cells, with the mapping's file options (delimiter, decimal
    mark, sheet) where it gives them."""
    return read_table(path, **site_read_options(path, mapping, sheet))


def map_and_validate(
    raw: pd.DataFrame,
    mapping: SiteMapping | None,
    *,
    row_offset: int = 0,
    with_outcome: bool | None = None,
    allow_all_rejected: bool = False,
    strict: bool = False,
) -> ValidationResult:
    """Apply the site mapping (if any) to a raw table or chunk, and validate the result."""
    extra = {}
    if mapping is not None:
        mapped = apply_mapping(raw, mapping, row_offset=row_offset)
        raw, extra = mapped.frame, mapped.validate_kwargs()
    return validate(raw, with_outcome=with_outcome, row_offset=row_offset,
                    allow_all_rejected=allow_all_rejected, strict=strict, **extra)


def load_baseline(
    path: str | Path,
    *,
    mapping: str | Path | SiteMapping | None = None,
    with_outcome: bool | None = None,
    sheet: str | None = None,
    strict: bool = False,
) -> LoadedTable:
    """Read ``path``, apply the site mapping if any, and validate it against the contract.

    ``strict``: reject a row with an implausible laboratory value instead of blanking it.
    """
    if mapping is not None and not isinstance(mapping, SiteMapping):
        mapping = load_mapping(mapping)
    raw = read_site_table(path, mapping, sheet=sheet)
    result = map_and_validate(raw, mapping, with_outcome=with_outcome, strict=strict)
    return LoadedTable(result, Path(path), mapping)


def load_events(path: str | Path) -> ValidationResult:
    """Read and validate the raw CRS event table (contract section 3)."""
    return validate_events(read_table(path))
