"""The rejected table: one row per (input row, column, rule broken), with what was done about it
(``rejected``: the row was not used; ``blanked``: the value was set to missing and the row used)
and the value as the input file wrote it, beside the contract's column and value.

Its columns are `crsrisk.contract.spec.REJECTED_TABLE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crsrisk.contract.spec import REJECTED_COLUMNS

__all__ = [
    "REJECTED",
    "BLANKED",
    "WHOLE_ROW",
    "Source",
    "empty_rejected",
    "rejected_frame",
    "conform_rejected",
    "merge_rejected",
    "cell_text",
]

REJECTED, BLANKED = "rejected", "blanked"
# The `column` of a row that could not be read at all (too few or too many fields).
WHOLE_ROW = "(whole row)"
_TEXT_COLUMNS = [c for c in REJECTED_COLUMNS if c != "row_number"]


@dataclass(frozen=True)
class Source:
    """Where a contract column came from in the input file.

    Attributes
    ----------
    column : str
        The file's own column name.
    values : pandas.Series
        Its cells as read, before any recoding or unit conversion (positions as in the table).
    unit : str
        The unit the mapping said the values are in ("" when none was given).
    """

    column: str
    values: pd.Series
    unit: str = ""

    def shown(self, position: int) -> str:
        """The cell at ``position`` as the file wrote it, with its unit."""
        text = cell_text(self.values.iat[position])
        return f"{text} {self.unit}" if text and self.unit else text


def cell_text(value: object) -> str:
    """A cell as text: missing as "", floats without binary noise (0.7, not 0.7000000000000001)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float | np.floating):
        return f"{float(value):.12g}"
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat() if value == value.normalize() else value.isoformat()
    return str(value)


_EMPTY = pd.DataFrame(
    {"row_number": pd.Series(dtype="int64")} | {c: pd.Series(dtype="str") for c in _TEXT_COLUMNS}
)


def empty_rejected() -> pd.DataFrame:
    """A rejected table without rows (a copy: built once, as every clean chunk needs one)."""
    return _EMPTY.copy()


def rejected_frame(
    raw: pd.DataFrame,
    positions: np.ndarray,
    columns: np.ndarray,
    words: np.ndarray,
    actions: np.ndarray,
    row_offset: int,
    sources: Mapping[str, Source] | None = None,
) -> pd.DataFrame:
    """Rejected-table rows for the cells at (``positions``, ``columns``) of ``raw``.

    ``raw`` is the table as validated (after any mapping); ``sources`` say where its columns
    came from in the file, so that the value is also shown as the file wrote it.
    """
    if positions.size == 0:
        return empty_rejected()
    sources = sources or {}
    ids = raw["patient_id"] if "patient_id" in raw.columns else None
    patient_ids = (
        [None if pd.isna(v) else str(v) for v in ids.iloc[positions]]
        if ids is not None
        else [None] * positions.size
    )
    values, source_columns, source_values = _cells(raw, positions, columns, sources)
    rejected = pd.DataFrame(
        {
            "row_number": (positions + 1 + row_offset).astype("int64"),
            "patient_id": pd.Series(patient_ids, dtype="str"),
            "column": pd.Series(columns, dtype="str"),
            "check": pd.Series(words, dtype="str"),
            "value": pd.Series(values, dtype="str"),
            "action": pd.Series(actions, dtype="str"),
            "source_column": pd.Series(source_columns, dtype="str"),
            "source_value": pd.Series(source_values, dtype="str"),
        }
    )
    return rejected


def _cells(
    raw: pd.DataFrame, positions: np.ndarray, columns: np.ndarray, sources: Mapping[str, Source]
) -> tuple[list[str], list[str], list[str]]:
    """Value, source column and source value of each (position, column): one column at a time,
    as a cell-by-cell lookup costs a column selection per cell."""
    n = positions.size
    values, source_columns, source_values = [""] * n, [""] * n, [""] * n
    for column in dict.fromkeys(columns.tolist()):
        at = np.flatnonzero(columns == column)
        rows = positions[at]
        source = sources.get(column)
        here = ([cell_text(v) for v in raw[column].take(rows).tolist()]
                if column in raw.columns else [""] * at.size)
        if source is not None:
            origin = [source.column] * at.size
            shown = [source.shown(int(p)) for p in rows]
        elif column in raw.columns:
            origin, shown = [column] * at.size, here
        else:
            origin, shown = [""] * at.size, [""] * at.size
        for i, value, col, text in zip(at.tolist(), here, origin, shown, strict=True):
            values[i], source_columns[i], source_values[i] = value, col, text
    return values, source_columns, source_values


def conform_rejected(rejected: pd.DataFrame) -> pd.DataFrame:
    """``rejected`` with every column of the rejected table, in order (older producers lack
    ``action`` and the source columns: their rows were rejected, the file's own column)."""
    frame = rejected
    if "action" not in frame.columns:
        frame = frame.assign(action=REJECTED)
    if "source_column" not in frame.columns:
        frame = frame.assign(source_column=frame["column"])
    if "source_value" not in frame.columns:
        frame = frame.assign(source_value=frame["value"])
    return frame[list(REJECTED_COLUMNS)].astype(
        {"row_number": "int64"} | dict.fromkeys(_TEXT_COLUMNS, "str")
    )


def merge_rejected(*parts: pd.DataFrame) -> pd.DataFrame:
    """One rejected table from several: one entry per (row, column), earlier parts first,
    sorted by row and column."""
    frames = [conform_rejected(p) for p in parts if p is not None and not p.empty]
    if not frames:
        return empty_rejected()
    rejected = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    rejected = rejected.drop_duplicates(["row_number", "column"], keep="first")
    return rejected.sort_values(["row_number", "column"], kind="stable").reset_index(drop=True)
