"""Small tables (a REST request's few rows) are validated cell by cell (contract.small) only when
that gives exactly what the column-wise path gives: the same valid frame, rejected table and
warnings for any input, and the small path taken for clean tables as clients send them."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crsrisk.contract import small
from crsrisk.contract import validate as validation
from crsrisk.contract.spec import BASELINE_COLUMNS, OUTCOME_NAMES
from crsrisk.mlops.pyfunc import to_wire
from crsrisk.mlops.serving import parse_request
from crsrisk.simulate.cohort import simulate_cohort
from tests.conftest import baseline_frame

TODAY = dt.date.today()


@contextlib.contextmanager
def column_wise_only():
    with mock.patch.object(validation, "clean_rows", return_value=None):
        yield


def both_paths(df: pd.DataFrame, **kwargs) -> tuple[object, object]:
    """(validate as it runs, validate with the small path switched off): each a result or the
    exception raised."""
    outcomes = []
    for switch in (contextlib.nullcontext, column_wise_only):
        with switch():
            try:
                outcomes.append(validation.validate(df.copy(), **kwargs))
            except Exception as exc:  # noqa: BLE001 -- the paths must fail alike, too
                outcomes.append(exc)
    return outcomes[0], outcomes[1]


def assert_same(df: pd.DataFrame, **kwargs) -> None:
    ours, reference = both_paths(df, **kwargs)
    if isinstance(reference, Exception):
        assert type(ours) is type(reference) and str(ours) == str(reference)
        return
    assert not isinstance(ours, Exception), ours
    pd.testing.assert_frame_equal(ours.valid, reference.valid, check_index_type=True)
    pd.testing.assert_frame_equal(ours.rejected, reference.rejected)
    assert ours.warnings == reference.warnings and ours.n_read == reference.n_read


def wire_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Validated rows as a REST request's JSON gives them to the model."""
    split = json.loads(to_wire(rows).to_json(orient="split", index=False))
    table, _ = parse_request(json.dumps({"dataframe_split": split}).encode(), "application/json")
    return table


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    baseline = simulate_cohort(64, seed=5).baseline.drop(columns=list(OUTCOME_NAMES))
    return validation.validate(baseline).valid.reset_index(drop=True)


def forms(cohort: pd.DataFrame, rows: slice) -> dict[str, pd.DataFrame]:
    typed = cohort.iloc[rows].reset_index(drop=True)
    text = to_wire(typed).replace({"nan": "", "<NA>": ""}).astype("str")
    return {"typed": typed, "json": wire_table(typed), "text": text}


@pytest.mark.parametrize("rows", [slice(0, 1), slice(1, 6), slice(0, small.SMALL_TABLE_ROWS)])
@pytest.mark.parametrize("form", ["typed", "json", "text"])
def test_clean_small_tables_take_the_small_path_and_equal_the_column_wise_one(cohort, rows, form):
    table = forms(cohort, rows)[form]
    specs = BASELINE_COLUMNS
    assert small.clean_rows(table, specs, today=TODAY) is not None  # the fast path is taken
    assert_same(table)
    assert_same(table, row_offset=100)  # row numbers of a later chunk


def test_the_shared_valid_rows_take_the_small_path(baseline):
    with_extra = baseline.assign(ward=["3A", "ICU", "5B"])
    assert small.clean_rows(with_extra, BASELINE_COLUMNS, today=TODAY) is not None
    assert_same(with_extra)
    # costim_domain filled from the product table, as the column-wise path does
    assert validation.validate(baseline).valid["costim_domain"].tolist()[0] == "CD28"


def test_larger_tables_go_column_wise(cohort):
    table = forms(cohort, slice(0, small.SMALL_TABLE_ROWS + 1))["text"]
    assert small.clean_rows(table, BASELINE_COLUMNS, today=TODAY) is None
    assert_same(table)


TOMORROW = (TODAY + dt.timedelta(days=1)).isoformat()
NUMBER_CELLS = ["5", " 5 ", "5.0", "-0", "-0.0", "1e2", ".5", "5.", "+3", "5,5", "inf", "-inf",
                "nan", "NaN", "", "  ", "abc", "1_000", "\u0663", "1e400", "0x10", "99999",
                "-5", "0.1000000000000000055511151231257827", "2.5", "\u00a05", "5\u00a0", None,
                3, 2.5, -0.0, True, float("nan"), np.inf, 10**20]
DATE_CELLS = ["2021-03-04", " 2021-03-04 ", "2021-3-4", "2021-02-30", "2008-12-31",
              "2009-01-01", TODAY.isoformat(), TOMORROW, "2021-03-04T10:00", "2021-03-04Z",
              "04/03/2021", "", "\uff12\uff10\uff12\uff11-03-04", None, 20210304,
              pd.Timestamp("2021-03-04"), pd.Timestamp("2021-03-04 10:30")]
BOOL_CELLS = ["true", "TRUE", " yes ", "Y", "1", "1.0", "0", "0.0", "2", "maybe", "", " ",
              True, False, 1, 0.0, None, "t", "No"]
TEXT_CELLS = ["P1", " P1 ", "=cmd", "+1", "-x", "@x", "\tx", "x\u00a0", "\x1cx", "", " ", None,
              12, "P2-0", "A", "a b", "\u00e9"]
CATEGORY_CELLS = ["car-t", " CAR-T ", "CAR T", "car_t", "CAR-T", "bispecific", "BISPECIFIC",
                  "axi-cel", "AXI-CEL", "teclistamab", "other_car_t", "CD28", "cd28", "4-1BB",
                  "MM", "LBCL", "b-all", "flu_cy", "none", "F", "m", "", None, 1, "unknown"]
CROSS_CELLS = {"therapy_class": ["CAR-T", "bispecific", "car-t"],
               "product": ["axi-cel", "tisa-cel", "teclistamab", "other_car_t", "Axi-Cel"],
               "costim_domain": ["", "CD28", "4-1BB", "cd28"],
               "cell_dose_1e6_per_kg": ["", "2", None]}
CELLS = {"float": NUMBER_CELLS, "int": NUMBER_CELLS, "date": DATE_CELLS, "bool": BOOL_CELLS,
         "str": TEXT_CELLS, "category": CATEGORY_CELLS}


@st.composite
def edited_tables(draw) -> pd.DataFrame:
    """The shared valid rows (1-3 copies) with a few cells, names or columns changed."""
    table = baseline_frame(draw(st.integers(1, 3))).astype(object)
    for _ in range(draw(st.integers(0, 4))):
        spec = draw(st.sampled_from(BASELINE_COLUMNS))
        row = draw(st.integers(0, len(table) - 1))
        table.loc[row, spec.name] = draw(st.sampled_from(CELLS[spec.kind]))
    if draw(st.booleans()):  # the rules between columns: class, product, costim, dose
        row = draw(st.integers(0, len(table) - 1))
        for column, cells in CROSS_CELLS.items():
            table.loc[row, column] = draw(st.sampled_from(cells))
    edit = draw(st.sampled_from(["none", "none", "drop", "rename", "extra", "str dtype"]))
    name = draw(st.sampled_from([s.name for s in BASELINE_COLUMNS]))
    if edit == "drop":
        table = table.drop(columns=[name])
    elif edit == "rename":
        table = table.rename(columns={name: f" {name.upper()}"})
    elif edit == "extra":
        table["notes"] = draw(st.sampled_from(["x", None, 3]))
    elif edit == "str dtype":
        table = table.map(lambda v: None if v is None else str(v)).astype("str")
    return table


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited_tables(), st.booleans())
def test_any_edit_gives_what_the_column_wise_path_gives(table, strict):
    assert_same(table, strict=strict)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_typed_and_json_rows_with_an_edit_give_what_the_column_wise_path_gives(cohort, data):
    start = data.draw(st.integers(0, 60))
    table = forms(cohort, slice(start, start + data.draw(st.integers(1, 4))))[
        data.draw(st.sampled_from(["typed", "json"]))].astype(object)
    spec = data.draw(st.sampled_from(BASELINE_COLUMNS))
    table.loc[0, spec.name] = data.draw(st.sampled_from(CELLS[spec.kind]))
    assert_same(table)
