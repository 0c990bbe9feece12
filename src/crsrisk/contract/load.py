"""Reading a user's table end to end: file -> site mapping -> contract validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crsrisk.contract.mapping import SiteMapping, apply_mapping, load_mapping
from crsrisk.contract.validate import ValidationResult, validate, validate_events
from crsrisk.io import read_table

__all__ = ["LoadedTable", "load_baseline", "load_events"]


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


def load_baseline(
    path: str | Path,
    *,
    mapping: str | Path | SiteMapping | None = None,
    with_outcome: bool | None = None,
) -> LoadedTable:
    """Read ``path``, apply the site mapping if any, and validate it against the contract."""
    if mapping is not None and not isinstance(mapping, SiteMapping):
        mapping = load_mapping(mapping)
    raw = read_table(path)
    problems = None
    if mapping is not None:
        mapped = apply_mapping(raw, mapping)
        raw, problems = mapped.frame, mapped.problems
    result = validate(raw, with_outcome=with_outcome, extra_problems=problems)
    return LoadedTable(result, Path(path), mapping)


def load_events(path: str | Path) -> ValidationResult:
    """Read and validate the raw CRS event table (contract section 3)."""
    return validate_events(read_table(path))
