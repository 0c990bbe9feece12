"""ASTCT 2019 grading and label resolution (data contract sections 2 and 3, docs/contract.md)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from crsrisk.contract.grading import (
    OTHER_SCALE_NOTES,
    LabelError,
    astct_grade,
    resolve_labels,
)
from crsrisk.contract.products import GRADING_SCALES, HYPOTENSION_LEVELS, HYPOXIA_LEVELS


def events(*rows: tuple, ids: list[str] | None = None) -> pd.DataFrame:
    """Event table from (fever, hypotension, hypoxia, crs_death) tuples."""
    frame = pd.DataFrame(rows, columns=["fever", "hypotension", "hypoxia", "crs_death"])
    frame.insert(0, "patient_id", ids or [f"p{i}" for i in range(len(rows))])
    return frame.astype({"fever": "boolean", "crs_death": "boolean"})


def baseline(ids: list[str], grades: list, scales: list, index=None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": pd.Series(ids, dtype="str"),
            "crs_max_grade": pd.array(grades, dtype="Int64"),
            "crs_grading_scale": pd.Series(scales, dtype="str"),
        }
    ).set_axis(index if index is not None else range(len(ids)))


def grade_of(fever: bool, hypotension: str, hypoxia: str, death: bool = False) -> int:
    return int(astct_grade(events((fever, hypotension, hypoxia, death))).iloc[0])


# --- ASTCT consensus table (Lee et al. 2019), one row per line of the table ---------------------


@pytest.mark.parametrize(
    ("fever", "hypotension", "hypoxia", "death", "expected"),
    [
        pytest.param(False, "none", "none", False, 0, id="no fever"),
        pytest.param(True, "none", "none", False, 1, id="fever only"),
        pytest.param(True, "no_vasopressor", "none", False, 2, id="hypotension, no vasopressor"),
        pytest.param(True, "none", "low_flow", False, 2, id="low-flow oxygen"),
        pytest.param(True, "one_vasopressor", "none", False, 3, id="one vasopressor"),
        pytest.param(True, "none", "high_flow", False, 3, id="high-flow oxygen"),
        pytest.param(True, "multiple_vasopressors", "none", False, 4, id="multiple vasopressors"),
        pytest.param(True, "none", "positive_pressure", False, 4, id="positive pressure"),
        pytest.param(True, "none", "none", True, 5, id="death"),
    ],
)
def test_consensus_table(fever, hypotension, hypoxia, death, expected):
    assert grade_of(fever, hypotension, hypoxia, death) == expected


# Written out by hand from the consensus table, not computed: rows are hypotension, columns
# hypoxia, both in the order none, lowest support, ..., highest support.
EXPECTED_GRID = {
    "none": {"none": 1, "low_flow": 2, "high_flow": 3, "positive_pressure": 4},
    "no_vasopressor": {"none": 2, "low_flow": 2, "high_flow": 3, "positive_pressure": 4},
    "one_vasopressor": {"none": 3, "low_flow": 3, "high_flow": 3, "positive_pressure": 4},
    "multiple_vasopressors": {"none": 4, "low_flow": 4, "high_flow": 4, "positive_pressure": 4},
}


@pytest.mark.parametrize("hypoxia", HYPOXIA_LEVELS)
@pytest.mark.parametrize("hypotension", HYPOTENSION_LEVELS)
def test_worse_of_hypotension_and_hypoxia(hypotension, hypoxia):
    assert grade_of(True, hypotension, hypoxia) == EXPECTED_GRID[hypotension][hypoxia]


@pytest.mark.parametrize("hypoxia", HYPOXIA_LEVELS)
@pytest.mark.parametrize("hypotension", HYPOTENSION_LEVELS)
def test_no_fever_is_grade_0_whatever_the_organ_support(hypotension, hypoxia):
    assert grade_of(False, hypotension, hypoxia) == 0


@pytest.mark.parametrize("fever", [True, False])
def test_death_overrides_everything(fever):
    assert grade_of(fever, "none", "none", death=True) == 5
    assert grade_of(fever, "multiple_vasopressors", "positive_pressure", death=True) == 5


def test_grade_is_int64_on_the_events_index_and_categoricals_work():
    frame = events(
        (True, "one_vasopressor", "low_flow", False),
        (False, "no_vasopressor", "none", False),
        (True, "none", "positive_pressure", False),
    ).set_axis([10, 20, 30])
    categorical = frame.astype(
        {
            "hypotension": pd.CategoricalDtype(HYPOTENSION_LEVELS),
            "hypoxia": pd.CategoricalDtype(HYPOXIA_LEVELS),
        }
    )
    for table in (frame, categorical):
        grades = astct_grade(table)
        assert grades.dtype == "Int64"
        assert grades.index.tolist() == [10, 20, 30]
        assert grades.tolist() == [3, 0, 4]


def test_missing_input_leaves_the_grade_missing_unless_it_cannot_matter():
    frame = events(
        (pd.NA, "none", "none", False),  # fever unknown
        (True, "none", "none", pd.NA),  # death unknown
        (True, None, "low_flow", False),  # hypotension unknown
        (False, None, None, False),  # no fever: organ support does not matter
        (pd.NA, None, None, True),  # death decides
    )
    assert astct_grade(frame).tolist() == [pd.NA, pd.NA, pd.NA, 0, 5]


def test_unknown_level_is_refused():
    with pytest.raises(LabelError, match=r"hypoxia holds unknown level 'nasal'.*low_flow"):
        astct_grade(events((True, "none", "nasal", False)))


def test_vectorised_on_many_rows():
    rng = np.random.default_rng(0)
    n = 200_000
    frame = pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "fever": pd.array(rng.random(n) < 0.7, dtype="boolean"),
            "hypotension": rng.choice(HYPOTENSION_LEVELS, n),
            "hypoxia": rng.choice(HYPOXIA_LEVELS, n),
            "crs_death": pd.array(rng.random(n) < 0.01, dtype="boolean"),
        }
    )
    grades = astct_grade(frame)
    sample = frame.sample(200, random_state=1)
    for i, row in sample.iterrows():
        expected = (
            5
            if row.crs_death
            else (EXPECTED_GRID[row.hypotension][row.hypoxia] if row.fever else 0)
        )
        assert grades[i] == expected


# --- resolve_labels -----------------------------------------------------------------------------


def test_astct_labels_used_as_given():
    base = baseline(["a", "b", "c"], [0, 3, 2], ["ASTCT"] * 3, index=[7, 8, 9])
    res = resolve_labels(base)
    assert res.astct_grade.tolist() == [0, 3, 2]
    assert res.astct_grade.dtype == "Int64"
    assert res.severe.tolist() == [0, 1, 0]
    assert res.severe.dtype == "int64"
    assert res.source.tolist() == ["given_astct"] * 3
    for series in (res.astct_grade, res.severe, res.source):
        assert series.index.tolist() == [7, 8, 9]
    assert (res.n_regraded, res.n_disagreeing) == (0, 0)


def test_mixed_scales_regraded_from_events():
    base = baseline(
        ["a", "b", "c", "d"],
        [3, 2, 4, 1],
        ["Penn", "Lee2014", "ASTCT", "CTCAE_v5"],
        index=[100, 101, 102, 103],
    )
    # Penn 3 for low-flow oxygen is ASTCT 2; Lee 2014 grade 2 with one vasopressor is ASTCT 3.
    ev = events(
        (True, "none", "low_flow", False),
        (True, "one_vasopressor", "none", False),
        (True, "no_vasopressor", "none", False),
        (True, "none", "none", False),
        (True, "multiple_vasopressors", "none", False),  # a patient not in the baseline
        ids=["a", "b", "d", "c", "zz"],
    )
    res = resolve_labels(base, ev)
    assert res.astct_grade.tolist() == [2, 3, 4, 2]
    assert res.severe.tolist() == [0, 1, 1, 0]
    assert res.source.tolist() == [
        "regraded_from_events",
        "regraded_from_events",
        "given_astct",
        "regraded_from_events",
    ]
    assert res.astct_grade.index.tolist() == [100, 101, 102, 103]
    assert res.n_regraded == 3
    assert res.n_disagreeing == 1  # c: given ASTCT 4, events say 1


def test_given_astct_label_kept_when_events_disagree():
    base = baseline(["a", "b"], [3, 1], ["ASTCT", "ASTCT"])
    ev = events((True, "none", "low_flow", False), (True, "none", "none", False), ids=["a", "b"])
    res = resolve_labels(base, ev)
    assert res.astct_grade.tolist() == [3, 1]
    assert res.severe.tolist() == [1, 0]
    assert res.source.tolist() == ["given_astct"] * 2
    assert res.n_disagreeing == 1


def test_categorical_scale_column():
    base = baseline(["a", "b"], [3, 3], ["ASTCT", "Penn"]).astype(
        {"crs_grading_scale": pd.CategoricalDtype(GRADING_SCALES)}
    )
    ev = events((True, "none", "high_flow", False), ids=["b"])
    res = resolve_labels(base, ev)
    assert res.astct_grade.tolist() == [3, 3]
    assert res.n_regraded == 1


def test_other_scales_without_events_refused_naming_scales_counts_and_fix():
    base = baseline(
        [f"p{i}" for i in range(14)],
        [3] * 14,
        ["Penn"] * 8 + ["ASTCT"] * 2 + ["Lee2014"] * 4,
    )
    with pytest.raises(LabelError) as info:
        resolve_labels(base)
    message = str(info.value)
    assert message.startswith("12 rows are graded on Penn (8) and Lee2014 (4)")
    assert "no raw event row" in message
    assert "--events PATH" in message
    assert "never pooled with ASTCT" in message
    assert "low-flow oxygen" in message  # the Penn note
    assert message.count(".") <= 1 + message.count("e.g.")  # one sentence


def test_rows_missing_from_the_event_table_refused():
    base = baseline(["a", "b", "c"], [3, 2, 3], ["Penn", "CTCAE_v4", "ASTCT"])
    ev = events((True, "none", "low_flow", False), ids=["a"])
    with pytest.raises(LabelError, match=r"^1 row is graded on CTCAE_v4 \(1\).*--events"):
        resolve_labels(base, ev)


def test_missing_outcome_columns_refused():
    base = baseline(["a"], [1], ["ASTCT"]).drop(columns=["crs_max_grade", "crs_grading_scale"])
    with pytest.raises(LabelError, match="training needs crs_max_grade and crs_grading_scale"):
        resolve_labels(base)
    with pytest.raises(LabelError, match="lacks crs_grading_scale:"):
        resolve_labels(baseline(["a"], [1], ["ASTCT"]).drop(columns=["crs_grading_scale"]))


def test_incomplete_outcomes_refused_with_counts_and_fix():
    base = baseline(
        ["a", "b", "c", "d", "e", "f"],
        [1, None, 2, 3, None, None],
        ["ASTCT", "ASTCT", None, None, None, "Penn"],
    )
    with pytest.raises(LabelError) as info:
        resolve_labels(base)
    message = str(info.value)
    assert "1 row has no outcome" in message
    assert "2 rows have a crs_max_grade but no crs_grading_scale" in message
    assert "2 rows have a crs_grading_scale but no crs_max_grade" in message
    assert re.search(r"complete these rows or drop them", message)


def test_duplicated_event_patient_ids_refused():
    base = baseline(["a"], [2], ["Penn"])
    ev = events((True, "none", "low_flow", False), (True, "none", "none", False), ids=["a", "a"])
    with pytest.raises(LabelError, match=r"more than one row for patient_id 'a'.*one row per"):
        resolve_labels(base, ev)


def test_every_other_scale_has_a_note():
    assert set(OTHER_SCALE_NOTES) == set(GRADING_SCALES) - {"ASTCT"}
    assert "low-flow" in OTHER_SCALE_NOTES["Penn"]
    assert "vasopressor" in OTHER_SCALE_NOTES["Lee2014"]
