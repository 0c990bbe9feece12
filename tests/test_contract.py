"""The contract: typed valid rows, a rejected table for row problems, ContractError for tables."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.contract import render
from crsrisk.contract.products import PRODUCTS
from crsrisk.contract.spec import (
    BASELINE_COLUMNS,
    BASELINE_NAMES,
    EVENT_COLUMNS,
    OUTCOME_COLUMNS,
    REJECTED_COLUMNS_DOC,
)
from crsrisk.contract.validate import (
    REJECTED_COLUMNS,
    ContractRejection,
    baseline_schema,
    validate,
    validate_events,
)
from crsrisk.errors import ContractError
from tests.conftest import baseline_frame

TODAY = dt.date(2026, 11, 21)


def test_valid_table_is_typed_and_complete(baseline):
    result = validate(baseline, today=TODAY)
    assert result.rejected.empty
    assert list(result.valid.index) == [0, 1, 2]
    valid = result.valid
    assert valid["age_years"].dtype == "float64"
    assert valid["ecog"].dtype == "Int64"
    assert valid["bridging_therapy"].dtype == "boolean"
    assert valid["infusion_date"].dtype == "datetime64[ns]"
    assert isinstance(valid["product"].dtype, pd.CategoricalDtype)
    assert valid["product"].cat.categories.size == 17  # fixed levels, not the ones seen
    assert valid.loc[0, "bridging_therapy"] is np.True_ or valid.loc[0, "bridging_therapy"]
    assert pd.isna(valid.loc[1, "bridging_therapy"])
    assert valid["patient_id"].tolist() == ["P1-0", "P2-0", "P3-0"]
    # The validated table passes the pandera schema on its own.
    baseline_schema(TODAY).validate(valid)


def test_categories_keep_the_contract_order_whatever_order_the_rows_give():
    # Every level present, first seen in another order than the contract's: unordered
    # categorical dtypes with the same levels compare equal, so a cast could silently keep the
    # rows' order, and the codes the model reads would change meaning.
    from crsrisk.contract.spec import BASELINE_COLUMNS
    from crsrisk.simulate.cohort import simulate_cohort

    table = simulate_cohort(3000, seed=5).baseline
    table = table.sort_values("diagnosis", key=lambda s: s.astype(str), ascending=False)
    table = table.reset_index(drop=True)
    valid = validate(table, today=TODAY).valid
    assert len(valid) == len(table)
    for spec in BASELINE_COLUMNS:
        if spec.levels and spec.name != "costim_domain":  # costim is filled for CAR-T rows
            column = valid[spec.name]
            assert list(column.cat.categories) == list(spec.levels), spec.name
            # Each code still means the value the row gave.
            meant = np.asarray(spec.levels, dtype=object)[column.cat.codes.to_numpy()]
            given = table[spec.name].astype(object).to_numpy()
            present = column.notna().to_numpy()
            assert (meant[present] == given[present]).all(), spec.name


def test_costim_filled_from_product_table_and_kept_when_given(baseline):
    valid = validate(baseline, today=TODAY).valid
    assert valid["costim_domain"].tolist()[0] == "CD28"  # axi-cel, filled
    assert pd.isna(valid["costim_domain"].tolist()[1])  # bispecific stays empty
    assert valid["costim_domain"].tolist()[2] == "4-1BB"  # other_car_t, as given


def test_optional_columns_may_be_left_out_and_extra_columns_carried(baseline):
    table = baseline.drop(columns=["il6_pg_ml", "sex", "site"]).assign(note=["a", "b", "c"])
    valid = validate(table, today=TODAY).valid
    assert valid["il6_pg_ml"].isna().all()
    assert valid["note"].tolist() == ["a", "b", "c"]
    assert set(BASELINE_NAMES) <= set(valid.columns)


def test_levels_match_case_insensitively(baseline):
    table = baseline.assign(product=["AXI-CEL", "Teclistamab", "other_car_t"],
                            costim_domain=["", "", "4-1bb"])
    valid = validate(table, today=TODAY).valid
    assert valid["product"].tolist() == ["axi-cel", "teclistamab", "other_car_t"]
    assert valid["costim_domain"].tolist()[2] == "4-1BB"


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("age_years", "sixty", "must be a number"),
        ("age_years", "111", "must be between 0 and 110"),
        ("age_years", "", "must not be missing"),
        ("ecog", "1.5", "must be a whole number"),
        ("ecog", "5", "must be between 0 and 4"),
        ("weight_kg", "inf", "must be a finite number"),
        ("crp_mg_l", "-1", "must be between 0 and 1000"),
        ("creatinine_mg_dl", "0.01", "must be between 0.05 and 30"),
        ("bulky_disease", "maybe", "must be true or false"),
        ("sex", "X", "must be one of F, M"),
        ("diagnosis", "AML", "must be one of LBCL"),
        ("product", "yescarta", "must be one of axi-cel"),
        ("infusion_date", "04/03/2021", "must be an ISO 8601 date"),
        ("infusion_date", "2008-12-31", "must be between 2009-01-01 and today"),
        ("infusion_date", "2026-11-22", "must be between 2009-01-01 and today (2026-11-21)"),
        ("patient_id", "=cmd|' /C calc'!A0", "spreadsheet formula"),
        ("patient_id", "", "must not be missing"),
        ("lymphodepletion", "cy_only", "must be one of flu_cy"),
    ],
)
def test_row_problem_lands_in_rejected_table(baseline, column, value, words):
    table = baseline.copy()
    table.loc[0, column] = value
    # strict: an implausible laboratory value (crp, creatinine) rejects its row too.
    result = validate(table, today=TODAY, strict=True)
    assert list(result.rejected.columns) == list(REJECTED_COLUMNS)
    assert result.rejected["action"].tolist() == ["rejected"]
    assert len(result.rejected) == 1, result.rejected
    row = result.rejected.iloc[0]
    assert row["row_number"] == 1
    assert row["column"] == column
    assert words in row["check"]
    assert row["value"] == value
    assert len(result.valid) == 2 and 0 not in result.valid.index


@pytest.mark.parametrize(
    ("row", "column", "value", "words"),
    [
        (1, "product", "axi-cel", "product must belong to therapy_class"),
        (0, "costim_domain", "4-1BB", "must match the product's costimulatory domain"),
        (1, "costim_domain", "CD28", "must be empty for bispecifics"),
        (1, "cell_dose_1e6_per_kg", "3", "must be empty for bispecifics"),
    ],
)
def test_cross_column_rules(baseline, row, column, value, words):
    table = baseline.copy()
    table.loc[row, column] = value
    rejected = validate(table, today=TODAY).rejected
    assert rejected[["row_number", "column"]].values.tolist() == [[row + 1, column]]
    assert words in rejected["check"].iloc[0]
    assert rejected["value"].iloc[0] == value


def test_duplicated_ids_reject_every_occurrence():
    table = baseline_frame(2)
    table.loc[4, "patient_id"] = "P1-0"
    result = validate(table, today=TODAY)
    assert sorted(result.rejected["row_number"]) == [1, 5]
    assert set(result.rejected["check"]) == {"must be unique in the table"}
    assert len(result.valid) == 4


def test_every_row_is_valid_or_rejected_with_several_problems_per_row():
    table = baseline_frame(3)
    table.loc[2, ["age_years", "sex"]] = ["200", "Q"]
    table.loc[7, "crp_mg_l"] = "high"
    result = validate(table, today=TODAY, row_offset=1000)
    assert result.rejected["row_number"].tolist() == [1003, 1003, 1008]
    assert set(result.valid.index) | {1002, 1007} == set(range(1000, 1009))


def test_missing_required_column_is_a_table_error(baseline):
    with pytest.raises(ContractError, match="lacks required column.*diagnosis.*--mapping"):
        validate(baseline.drop(columns=["diagnosis"]), today=TODAY)


def test_empty_table_is_a_table_error(baseline):
    with pytest.raises(ContractError, match="no data rows"):
        validate(baseline.iloc[:0], today=TODAY)


def test_every_row_invalid_raises_with_the_rejected_table(baseline):
    with pytest.raises(ContractRejection, match="Every row.*age_years must be a number") as info:
        validate(baseline.assign(age_years="old"), today=TODAY)
    assert len(info.value.rejected) == 3


def test_all_rejected_chunk_is_allowed_when_asked(baseline):
    result = validate(baseline.assign(age_years="old"), today=TODAY, allow_all_rejected=True)
    assert result.valid.empty and result.n_rejected_rows == 3


@pytest.mark.parametrize(
    ("column", "values", "words"),
    [
        ("crp_mg_l", ["0.5", "0.2", "0.8"], "crp_mg_l median is 0.5, which looks like mg/dL"),
        ("creatinine_mg_dl", ["22", "25", "28"], "looks like umol/L"),
    ],
)
def test_whole_column_unit_warnings(column, values, words):
    table = baseline_frame(2)
    table[column] = values * 2
    result = validate(table, today=TODAY)
    assert any(words in w for w in result.warnings), result.warnings
    assert result.rejected.empty


def test_platelets_per_ul_are_rejected_with_the_unit_hint():
    table = baseline_frame(2).assign(platelets_1e9_l=["150000", "190000", "80000"] * 2)
    with pytest.raises(ContractRejection, match="looks like cells per uL"):
        validate(table, today=TODAY)


def test_typed_parquet_style_input(baseline):
    typed = validate(baseline, today=TODAY).valid
    again = validate(typed, today=TODAY)
    assert again.rejected.empty
    pd.testing.assert_frame_equal(again.valid, typed)


def test_events_table():
    events = pd.DataFrame({
        "patient_id": ["a", "b", "b"],
        "fever": ["true", "false", "true"],
        "hypotension": ["one_vasopressor", "none", "pressors"],
        "hypoxia": ["none", "none", "low_flow"],
        "crs_death": ["false", "false", "false"],
    })
    result = validate_events(events)
    assert set(result.rejected["row_number"]) == {2, 3}
    assert "must be one of none" in " ".join(result.rejected["check"])


def test_rejected_columns_documented():
    assert tuple(REJECTED_COLUMNS) == REJECTED_COLUMNS_DOC


# --- the contract in the repository -------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_docs_contract_is_generated_from_the_spec():
    """docs/contract.md is `crsrisk contract` output: regenerate it with
    `crsrisk contract --out docs/contract.md` after changing contract/spec.py."""
    assert (ROOT / "docs" / "contract.md").read_text(encoding="utf-8") == render.markdown()


def test_markdown_names_every_column_with_unit_allowed_values_and_meaning():
    text = render.markdown()
    for spec in (*BASELINE_COLUMNS, *OUTCOME_COLUMNS, *EVENT_COLUMNS):
        assert spec.meaning, spec.name
        assert any(spec.unit in row and spec.allowed in row and spec.meaning in row
                   for row in text.splitlines() if row.startswith(f"| {spec.name} |")), spec
    for product in PRODUCTS.values():
        for brand in product.brands:
            assert brand in text
    for column in REJECTED_COLUMNS:
        assert f"| {column} |" in text


def test_templates_carry_the_contract_header(tmp_path):
    header = render.csv_template().strip().split(",")
    assert header == [s.name for s in (*BASELINE_COLUMNS, *OUTCOME_COLUMNS)]
    schema = json.loads(render.json_schema())
    assert schema["properties"]["crp_mg_l"]["x-unit"] == "mg/L"
    assert set(schema["required"]) == {s.name for s in BASELINE_COLUMNS if s.required}
    path = tmp_path / "template.xlsx"
    result = CliRunner().invoke(app, ["contract", "--format", "xlsx-template", "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert pd.read_excel(path, sheet_name="baseline", engine="calamine").columns.tolist() == header


def test_contract_command_prints_markdown_and_refuses_unknown_formats():
    runner = CliRunner()
    printed = runner.invoke(app, ["contract"])
    assert printed.exit_code == 0 and printed.output == render.markdown()
    unknown = runner.invoke(app, ["contract", "--format", "pdf"])
    assert unknown.exit_code == 2 and "unknown --format 'pdf'" in unknown.output


def test_nothing_points_outside_the_repository():
    for folder in ("src", "configs", "docs", "data", "tests"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".csv", ".txt"):
                assert "shared" + "/" not in path.read_text(encoding="utf-8"), path


# --- implausible laboratory values --------------------------------------------------------------


def test_an_implausible_lab_value_is_blanked_and_the_row_kept(baseline):
    table = baseline.copy()
    table.loc[0, "hemoglobin_g_dl"] = "0.1"
    result = validate(table, today=TODAY)
    assert len(result.valid) == 3 and pd.isna(result.valid.loc[0, "hemoglobin_g_dl"])
    assert result.rejected[["column", "value", "action"]].values.tolist() == [
        ["hemoglobin_g_dl", "0.1", "blanked"]]
    assert result.n_rejected_rows == 0 and result.n_blanked == 1


def test_a_blanked_value_in_a_rejected_row_is_not_called_blanked(baseline):
    table = baseline.copy()
    table.loc[0, ["hemoglobin_g_dl", "age_years"]] = ["0.1", "150"]
    result = validate(table, today=TODAY)
    assert set(result.rejected["action"]) == {"rejected"}
    assert result.n_rejected_rows == 1


def test_a_column_mostly_out_of_range_is_rejected_not_blanked():
    table = baseline_frame(2).assign(hemoglobin_g_dl=["110", "120", "98"] * 2)  # g/L
    result = validate(table, today=TODAY, allow_all_rejected=True)
    assert result.n_blanked == 0
    assert set(result.rejected.loc[result.rejected["column"].eq("hemoglobin_g_dl"),
                                   "action"]) == {"rejected"}


def test_non_lab_columns_are_never_blanked(baseline):
    table = baseline.copy()
    table.loc[0, "marrow_blasts_pct"] = "140"
    result = validate(table, today=TODAY)
    assert result.rejected["action"].tolist() == ["rejected"]
