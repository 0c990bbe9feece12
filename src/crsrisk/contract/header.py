"""Matching a file's column names to the names wanted, forgiving case and surrounding spaces.

`crp_mg_l ` (a trailing space) or `CRP_mg_L` is the contract's `crp_mg_l`: such a column is
matched, and a warning names it, so that header drift never silently drops a column.
"""

from __future__ import annotations

from collections.abc import Iterable

from crsrisk.errors import ContractError

__all__ = ["fold", "match_header"]


def fold(name: object) -> str:
    """A column name as compared: surrounding spaces trimmed, case folded."""
    return str(name).strip().casefold()


def match_header(
    columns: Iterable[object], wanted: Iterable[str], *, table: str = "table"
) -> tuple[dict[str, str], list[str]]:
    """Renames {file column: wanted name} for columns that match only after trimming and
    case-folding, and a warning naming each.

    Raises
    ------
    ContractError
        If two columns of the file match one wanted name (a duplicated column).
    """
    columns = [str(c) for c in columns]
    by_fold: dict[str, list[str]] = {}
    for column in columns:
        by_fold.setdefault(fold(column), []).append(column)
    renames: dict[str, str] = {}
    warnings = []
    for name in wanted:
        found = by_fold.get(fold(name), [])
        if len(found) > 1:
            raise ContractError(
                f"The {table} has {len(found)} columns that all read as {name!r} "
                f"({', '.join(map(repr, found))}): keep one, as which to use cannot be guessed."
            )
        if found and found[0] != name:
            source = found[0]
            renames[source] = name
            warnings.append(f"column {source!r} was read as {name!r} (names are matched "
                            "ignoring case and surrounding spaces): rename it to be sure.")
    return renames, warnings
