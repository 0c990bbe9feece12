"""ASTCT 2019 CRS grade from the raw event table, and resolution of training labels.

The target is severe CRS, ASTCT grade >= 3 (data contract sections 2 and 3, docs/contract.md).
Grades given on another scale are regraded from the raw event table or refused: never pooled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crsrisk.contract.products import GRADING_SCALES, HYPOTENSION_LEVELS, HYPOXIA_LEVELS
from crsrisk.contract.spec import EVENT_COLUMNS, OUTCOME_NAMES
from crsrisk.errors import CrsriskError

__all__ = [
    "HYPOTENSION_GRADE",
    "HYPOXIA_GRADE",
    "OTHER_SCALE_NOTES",
    "LabelError",
    "LabelResolution",
    "astct_grade",
    "resolve_labels",
]

ASTCT = "ASTCT"
SEVERE_FROM = 3
GIVEN = "given_astct"
REGRADED = "regraded_from_events"

# ASTCT grade reached by a febrile patient at each level of organ support.
HYPOTENSION_GRADE: dict[str, int] = dict(zip(HYPOTENSION_LEVELS, (1, 2, 3, 4), strict=True))
HYPOXIA_GRADE: dict[str, int] = dict(zip(HYPOXIA_LEVELS, (1, 2, 3, 4), strict=True))

OTHER_SCALE_NOTES: dict[str, str] = {
    "Lee2014": (
        "Lee 2014 grades hypotension needing one low-dose vasopressor as 2, ASTCT as 3, and "
        "splits oxygen need at FiO2 40% rather than by delivery device."
    ),
    "Penn": (
        "Penn grades low-flow oxygen as 3, ASTCT as 2, and Penn also grades hospitalisation for "
        "CRS organ dysfunction as 3."
    ),
    "CTCAE_v4": (
        "CTCAE v4.03 grades CRS like an infusion reaction, so any vasopressor or ventilatory "
        "support is 4 (ASTCT: one vasopressor is 3) and a slow response to treatment can be 3."
    ),
    "CTCAE_v5": (
        "CTCAE v5 splits oxygen need at FiO2 40% rather than at 6 L/min and does not require "
        "fever, so its grades 2 to 4 do not match ASTCT's."
    ),
}

EVENT_NAMES: tuple[str, ...] = tuple(c.name for c in EVENT_COLUMNS)


class LabelError(CrsriskError, ValueError):
    """Labels cannot be used for training.

    The message is one sentence naming the problem and the fix.
    """


@dataclass(frozen=True)
class LabelResolution:
    """Training labels resolved to the ASTCT scale.

    Attributes
    ----------
    astct_grade : pandas.Series
        ASTCT grade (``Int64``), aligned with the baseline index.
    severe : pandas.Series
        1 where the ASTCT grade is >= 3, else 0 (``int64``), aligned with the baseline index.
    source : pandas.Series
        Per row, ``"given_astct"`` or ``"regraded_from_events"``.
    n_regraded : int
        Rows graded on another scale and regraded from their event row.
    n_disagreeing : int
        Rows given an ASTCT grade that differs from the grade of their event row; the given
        grade is kept, the count is for a warning.
    """

    astct_grade: pd.Series
    severe: pd.Series
    source: pd.Series
    n_regraded: int
    n_disagreeing: int


def astct_grade(events: pd.DataFrame) -> pd.Series:
    """ASTCT 2019 consensus grade of each row of the raw CRS event table.

    Grade 5 for death from CRS; otherwise 0 without fever (``fever`` is True also when masked
    by antipyretics or anti-cytokine therapy), else the worse of the hypotension and hypoxia
    grades: 1 with neither, 2 for hypotension without vasopressors or low-flow oxygen, 3 for one
    vasopressor or high-flow oxygen, 4 for multiple vasopressors or positive pressure.

    Parameters
    ----------
    events : pandas.DataFrame
        Event table with columns ``fever``, ``hypotension``, ``hypoxia`` and ``crs_death``, as in
        section 3 of the data contract.

    Returns
    -------
    pandas.Series
        ``Int64`` grades 0..5 indexed like ``events``; missing where a missing input value
        leaves the grade undetermined.

    Raises
    ------
    LabelError
        If a column is absent or holds a level the contract does not define.
    """
    _require(events, EVENT_NAMES[1:], "the CRS event table")  # patient_id not needed
    death = events["crs_death"].astype("boolean")
    fever = events["fever"].astype("boolean")
    # np.maximum (unlike fmax) keeps a missing level missing: the grade is then undetermined.
    organ = np.maximum(
        _level_grade(events["hypotension"], HYPOTENSION_GRADE),
        _level_grade(events["hypoxia"], HYPOXIA_GRADE),
    )
    grade = np.where(fever.fillna(False).to_numpy(), organ, 0.0)
    grade = np.where(fever.isna().to_numpy(), np.nan, grade)
    grade = np.where(death.isna().to_numpy(), np.nan, grade)
    grade = np.where(death.fillna(False).to_numpy(), 5.0, grade)
    return pd.Series(grade, index=events.index, name="astct_grade").astype("Int64")


def resolve_labels(baseline: pd.DataFrame, events: pd.DataFrame | None = None) -> LabelResolution:
    """Resolve the training label, severe CRS (ASTCT grade >= 3), of every baseline row.

    ASTCT grades are used as given. Rows graded on another scale are regraded from their
    patient's row of the raw event table; event rows of patients not in the baseline are ignored.

    Parameters
    ----------
    baseline : pandas.DataFrame
        Validated baseline table with ``patient_id``, ``crs_max_grade`` and
        ``crs_grading_scale``.
    events : pandas.DataFrame, optional
        Validated raw CRS event table, one row per ``patient_id``.

    Returns
    -------
    LabelResolution

    Raises
    ------
    LabelError
        If the outcome columns are absent, a row lacks its grade or its scale, a row on another
        scale has no event row to regrade it from, or the event table repeats a patient_id.
    """
    missing = [c for c in OUTCOME_NAMES if c not in baseline.columns]
    if missing:
        raise LabelError(
            f"the table lacks {_join(missing)}: training needs crs_max_grade and "
            "crs_grading_scale on every row, so add them (or use the table for scoring only)"
        )
    given = pd.to_numeric(baseline["crs_max_grade"]).astype("Int64")
    scale = baseline["crs_grading_scale"].astype("string")
    _check_outcomes(given, scale)

    other = (scale != ASTCT).to_numpy(dtype=bool)
    event_grade = pd.Series(pd.NA, index=baseline.index, dtype="Int64")
    if events is not None:
        _require(baseline, ("patient_id",), "the baseline table")
        event_grade = _event_grades(baseline["patient_id"], events)

    unregradable = other & event_grade.isna().to_numpy()
    if unregradable.any():
        counts = scale[unregradable].value_counts()
        n = int(unregradable.sum())
        where = (
            "give the raw CRS event table with --events PATH"
            if events is None
            else f"add {'its row' if n == 1 else 'their rows'} to the raw CRS event table given "
            "with --events PATH"
        )
        notes = "; ".join(OTHER_SCALE_NOTES[s].rstrip(".") for s in counts.index)
        raise LabelError(
            f"{_rows(n)} graded on {_join([f'{s} ({c})' for s, c in counts.items()])} and "
            f"{'has' if n == 1 else 'have'} no raw event row to regrade "
            f"{'it' if n == 1 else 'them'} from: {where}, or regrade "
            f"{'it' if n == 1 else 'these rows'} to ASTCT; grades on other scales are never "
            f"pooled with ASTCT ({notes})."
        )

    grade = given.mask(other, event_grade)
    source = pd.Series(np.where(other, REGRADED, GIVEN), index=baseline.index, dtype="str")
    disagree = ~other & event_grade.notna().to_numpy() & (given != event_grade).fillna(False)
    return LabelResolution(
        astct_grade=grade.rename("astct_grade"),
        severe=(grade >= SEVERE_FROM).astype("int64").rename("severe"),
        source=source.rename("label_source"),
        n_regraded=int(other.sum()),
        n_disagreeing=int(disagree.sum()),
    )


def _level_grade(levels: pd.Series, grades: dict[str, int]) -> np.ndarray:
    """Grade of each level as floats, NaN where missing; LabelError on an unknown level."""
    text = levels.astype("str")
    out = text.map(grades)
    unknown = out.isna() & text.notna()
    if unknown.any():
        bad = sorted(text[unknown].unique())
        raise LabelError(
            f"{levels.name} holds unknown level {_join([repr(b) for b in bad])}: "
            f"use one of {', '.join(grades)}"
        )
    return out.to_numpy(dtype=float)


def _check_outcomes(given: pd.Series, scale: pd.Series) -> None:
    no_grade, no_scale = given.isna(), scale.isna()
    problems = []
    for mask, what in (
        (no_grade & no_scale, "no outcome (neither crs_max_grade nor crs_grading_scale)"),
        (~no_grade & no_scale, "a crs_max_grade but no crs_grading_scale"),
        (no_grade & ~no_scale, "a crs_grading_scale but no crs_max_grade"),
    ):
        if mask.any():
            problems.append(f"{_rows(int(mask.sum()), 'has')} {what}")
    if problems:
        raise LabelError(
            f"{'; '.join(problems)}: training needs a grade and its scale on every row, so "
            "complete these rows or drop them from the training table"
        )
    unknown = sorted(set(scale.dropna()) - set(GRADING_SCALES))
    if unknown:
        raise LabelError(
            f"crs_grading_scale holds unknown scale {_join([repr(u) for u in unknown])}: use one "
            f"of {', '.join(GRADING_SCALES)}"
        )
    out_of_range = (given < 0) | (given > 5)
    if out_of_range.any():
        raise LabelError(
            f"{_rows(int(out_of_range.sum()), 'has')} a crs_max_grade outside 0..5: correct "
            "these grades or drop the rows"
        )


def _event_grades(patient_id: pd.Series, events: pd.DataFrame) -> pd.Series:
    """ASTCT grade from each baseline row's event row (Int64, missing where there is none)."""
    _require(events, EVENT_NAMES, "the CRS event table")
    ids = events["patient_id"].astype("str")
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise LabelError(
            f"the CRS event table has more than one row for patient_id "
            f"{_join([repr(d) for d in dup[:5]])}{' and others' if len(dup) > 5 else ''} "
            f"({len(dup)} in all): give one row per patient_id with the worst values of the "
            "episode"
        )
    wanted = ids.isin(set(patient_id.astype("str"))).to_numpy()
    grades = astct_grade(events.loc[wanted])
    by_id = pd.Series(grades.to_numpy(), index=ids[wanted].to_numpy(), dtype="Int64")
    return patient_id.astype("str").map(by_id).astype("Int64")


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LabelError(f"{what} lacks {_join(missing)}: add the columns of the data contract")


def _rows(n: int, verb: str = "is") -> str:
    plural = {"is": "are", "has": "have"}[verb]
    return f"1 row {verb}" if n == 1 else f"{n} rows {plural}"


def _join(items: list[str]) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
