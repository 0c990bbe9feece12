"""The quick screen before pandera: it may skip pandera on a clean table, never change a verdict."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

import crsrisk.contract.validate as validate_module
from crsrisk.contract.screen import passes
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
    monkeypatch.setattr(validate_module, "passes", lambda schema, frame: False)
    full = validate(frame)
    pd.testing.assert_frame_equal(screened.rejected, full.rejected)
    pd.testing.assert_frame_equal(screened.valid, full.valid)
    assert screened.rejected.empty is (name == "clean")


def test_unknown_check_is_left_to_pandera(cohort):
    import pandera.pandas as pa

    parsed, _ = parse_columns(cohort, BASELINE_COLUMNS)
    schema = pa.DataFrameSchema({"age_years": pa.Column(float, pa.Check.gt(0))})
    assert passes(schema, parsed) is False
