"""The quick screen before pandera: it may skip pandera on a clean table, never change a verdict."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

import crsrisk.contract.validate as validate_module
from crsrisk.contract.screen import Unproven, narrowed, passes, unproven
from crsrisk.contract.spec import BASELINE_COLUMNS, OUTCOME_COLUMNS
from crsrisk.contract.validate import baseline_schema, parse_columns, validate
from crsrisk.simulate.cohort import simulate_cohort


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return simulate_cohort(300, seed=4).baseline


BREAKS = {
    "clean": lambda f: None,
    "out of range": lambda f: f.loc.__setitem__((5, "age_years"), 150.0),
    "below range": lambda f: f.loc.__setitem__((5, "ferritin_ng_ml"), -1.0),
    "unknown level": lambda f: f.loc.__setitem__((5, "product"), "foo-cel"),
    "missing required": lambda f: f.loc.__setitem__((5, "diagnosis"), None),
    "repeated id": lambda f: f.loc.__setitem__((5, "patient_id"), f.loc[6, "patient_id"]),
    "future date": lambda f: f.loc.__setitem__((5, "infusion_date"), pd.Timestamp("2099-01-01")),
    "product of another class": lambda f: f.loc.__setitem__(
        (f.index[f["therapy_class"].eq("CAR-T")][0], "therapy_class"), "bispecific"),
    "costim of another product": lambda f: f.loc.__setitem__(
        (f.index[f["product"].eq("axi-cel")][0], "costim_domain"), "4-1BB"),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_screen_agrees_with_pandera(cohort, name, monkeypatch):
    frame = cohort.copy()
    BREAKS[name](frame)
    parsed, _ = parse_columns(frame, BASELINE_COLUMNS + OUTCOME_COLUMNS)
    schema = baseline_schema(dt.date.today(), True)
    assert passes(schema, parsed) is (name == "clean")

    screened = validate(frame)
    monkeypatch.setattr(validate_module, "unproven", everything)
    full = validate(frame)
    pd.testing.assert_frame_equal(screened.rejected, full.rejected)
    pd.testing.assert_frame_equal(screened.valid, full.valid)
    assert screened.rejected.empty is (name == "clean")


def everything(schema, frame) -> Unproven:
    """What the screen answers when it proves nothing: pandera runs the whole schema."""
    return Unproven(tuple(schema.columns), tuple(range(len(schema.checks))))


def test_pandera_runs_on_the_unproven_columns_only_and_finds_every_problem(cohort, monkeypatch):
    frame = cohort.copy()
    for name in ("out of range", "unknown level", "repeated id", "costim of another product"):
        BREAKS[name](frame)
    frame.loc[9, "age_years"] = -3.0
    parsed, _ = parse_columns(frame, BASELINE_COLUMNS + OUTCOME_COLUMNS)
    schema = baseline_schema(dt.date.today(), True)
    which = unproven(schema, parsed)
    assert set(which.columns) == {"age_years", "product", "patient_id"}
    assert [schema.checks[i].error for i in which.checks] == [
        "costim_domain must match the product's costimulatory domain"]
    sub = narrowed(schema, which)
    assert list(sub.columns) == [c for c in schema.columns if c in which.columns]
    assert len(schema.columns) == len(BASELINE_COLUMNS + OUTCOME_COLUMNS)  # left untouched

    screened = validate(frame)
    monkeypatch.setattr(validate_module, "unproven", everything)
    full = validate(frame)
    pd.testing.assert_frame_equal(screened.rejected, full.rejected)
    pd.testing.assert_frame_equal(screened.valid, full.valid)
    assert len(screened.rejected) == 6


def test_unknown_check_is_left_to_pandera(cohort):
    import pandera.pandas as pa

    parsed, _ = parse_columns(cohort, BASELINE_COLUMNS)
    schema = pa.DataFrameSchema({"age_years": pa.Column(float, pa.Check.gt(0))})
    assert passes(schema, parsed) is False
