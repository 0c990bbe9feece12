"""Column labels and units are written once, on the contract's ColumnSpec, and read everywhere."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crsrisk.contract import render
from crsrisk.contract.spec import BASELINE_COLUMNS, BASELINE_SPECS, ColumnSpec
from crsrisk.contract.validate import validate
from crsrisk.explain.drivers import _phrase, driver_label
from crsrisk.features.builder import feature_label
from crsrisk.report.data import column_label, predictors_table
from tests.conftest import baseline_frame

SRC = Path(__file__).resolve().parents[1] / "src" / "crsrisk"
# Every column a driver can name: not the identifiers.
CLINICAL = [c for c in BASELINE_COLUMNS if c.name not in ("patient_id", "site", "infusion_date")]


def test_every_clinical_column_has_a_label_and_identifiers_have_none():
    for spec in CLINICAL:
        assert spec.label and ";" not in spec.label, spec.name  # ";" separates drivers
    for name in ("patient_id", "site", "infusion_date"):
        assert BASELINE_SPECS[name].label == ""


def test_heading_puts_the_shown_unit_beside_the_label():
    assert BASELINE_SPECS["crp_mg_l"].heading == "CRP (mg/L)"
    assert BASELINE_SPECS["platelets_1e9_l"].unit == "10^9/L"
    assert BASELINE_SPECS["platelets_1e9_l"].heading == "Platelets (x10^9/L)"
    assert BASELINE_SPECS["product"].heading == "Product"
    assert ColumnSpec("x", "float", unit="kg", label="X", label_unit="").heading == "X"


@pytest.mark.parametrize("spec", CLINICAL, ids=lambda s: s.name)
def test_drivers_report_and_features_read_the_label_from_the_spec(spec):
    assert driver_label(spec.name) == spec.heading
    assert column_label(spec.name) == spec.heading
    assert feature_label(spec.name) == spec.heading


def test_a_changed_spec_label_changes_every_reader(monkeypatch):
    relabelled = ColumnSpec("crp_mg_l", "float", unit="mg/L", label="C-reactive protein")
    monkeypatch.setitem(BASELINE_SPECS, "crp_mg_l", relabelled)
    assert driver_label("crp_mg_l") == "C-reactive protein (mg/L)"
    assert column_label("crp_mg_l") == "C-reactive protein (mg/L)"
    valid = validate(baseline_frame()).valid
    assert _phrase("crp_mg_l", valid, np.arange(1)).tolist() == ["C-reactive protein 25 mg/L"]


def test_driver_phrases_read_value_and_shown_unit():
    valid = validate(baseline_frame()).valid
    rows = np.arange(len(valid))
    assert _phrase("platelets_1e9_l", valid, rows).tolist() == [
        "Platelets 150 x10^9/L", "Platelets 190 x10^9/L", "Platelets 80 x10^9/L"]
    assert _phrase("il6_pg_ml", valid, rows).tolist() == [
        "IL-6 missing", "IL-6 6 pg/mL", "IL-6 missing"]
    assert _phrase("cell_dose_1e6_per_kg", valid, rows).tolist()[1] == (
        "Cell dose not applicable (bispecific)")


def test_contract_renderings_carry_the_label():
    rows = render.markdown().splitlines()
    crp = next(r for r in rows if r.startswith("| crp_mg_l |"))
    assert crp.startswith("| crp_mg_l | CRP (mg/L) | number | mg/L |")
    grade = next(r for r in rows if r.startswith("| crs_max_grade |"))
    assert grade.startswith("| crs_max_grade | whole number |")  # no label column there
    schema = json.loads(render.json_schema())
    assert schema["properties"]["crp_mg_l"]["title"] == "CRP (mg/L)"
    assert "title" not in schema["properties"]["patient_id"]
    predictors = predictors_table().set_index("Contract column")["Predictor"]
    assert predictors["ferritin_ng_ml"] == "Ferritin (ng/mL)"


def _strings_in_code(path: Path) -> set[str]:
    """The string constants of a module, docstrings (which give examples) left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and ast.get_docstring(node) is not None
    }
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings}


def test_no_module_relists_the_contracts_labels_or_shown_units():
    """Labels with units are the spec's: no other module spells one out."""
    vocabulary = ({s.heading for s in CLINICAL if s.display_unit}
                  | {s.label_unit for s in CLINICAL if s.label_unit})
    for path in SRC.rglob("*.py"):
        if path.name != "spec.py":
            assert not vocabulary & _strings_in_code(path), path.name


def test_xlsx_reference_sheet_has_the_label(tmp_path):
    path = tmp_path / "template.xlsx"
    render.write_xlsx_template(path)
    reference = pd.read_excel(path, sheet_name="columns", engine="calamine")
    assert reference.set_index("column").loc["anc_1e9_l", "shown as"] == "ANC (x10^9/L)"
