"""`crsrisk validate` on a corpus of bad inputs: each has its documented outcome, none a traceback.

| input                               | outcome                                                    |
|-------------------------------------|------------------------------------------------------------|
| all rows valid                      | exit 0, empty rejected table                               |
| wrong types, out of range, unknown  | exit 1, each bad row in the rejected table with its rule   |
|   product, product/class mismatch,  |                                                            |
|   duplicated ids, formula strings,  |                                                            |
|   a future infusion date            |                                                            |
| CRP in mg/dL                        | exit 0, a warning naming the unit and the fix              |
| missing required column             | exit 2, one sentence naming the column                     |
| empty file, binary garbage,         | exit 2, one sentence naming the problem                    |
|   non-UTF-8 file, not CSV/Parquet   |                                                            |
| every row invalid                   | exit 2, one sentence, rejected table still written         |
"""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.io import read_table
from tests.conftest import baseline_frame

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def write(tmp_path, df: pd.DataFrame, name: str = "in.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)  # as a site would export it, formulas and all
    return path


def test_all_valid_exits_0(tmp_path):
    path = write(tmp_path, baseline_frame(2))
    rejected = tmp_path / "rej.csv"
    result = run("validate", path, "--rejected", rejected)
    assert result.exit_code == 0, result.output
    assert "read 6 rows: 6 valid, 0 rejected" in result.output
    assert read_table(rejected).empty


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("age_years", "sixty", "must be a number"),
        ("platelets_1e9_l", "5000", "must be between 0 and 3000"),
        ("product", "Yescarta", "must be one of"),
        ("product", "glofitamab", "product must belong to therapy_class"),
        ("patient_id", "P2-0", "must be unique in the table"),
        ("patient_id", "=cmd|' /C calc'!A0", "spreadsheet formula"),
        ("infusion_date", "2099-01-01", "must be between 2009-01-01 and today"),
    ],
)
def test_row_problems_exit_1_and_are_written(tmp_path, column, value, words):
    table = baseline_frame(2)
    table.loc[0, column] = value
    rejected = tmp_path / "rej.csv"
    result = run("validate", write(tmp_path, table), "--rejected", rejected)
    assert result.exit_code == 1, result.output
    assert words in result.output
    out = read_table(rejected)
    assert "1" in out["row_number"].tolist()
    assert words in " ".join(out["check"])


def test_formula_value_is_neutralised_in_the_rejected_file(tmp_path):
    table = baseline_frame().assign(patient_id=["=HYPERLINK(1)", "P2", "P3"])
    rejected = tmp_path / "rej.csv"
    run("validate", write(tmp_path, table), "--rejected", rejected)
    # patient_id, value and source_value cells
    assert rejected.read_text().count("'=HYPERLINK(1)") == 3


def test_crp_in_mg_dl_warns_with_the_fix(tmp_path):
    table = baseline_frame(2).assign(crp_mg_l=["0.4", "0.9", "0.2"] * 2)
    result = run("validate", write(tmp_path, table), "--rejected", tmp_path / "r.csv")
    assert result.exit_code == 0
    assert "warning: crp_mg_l median is 0.4" in result.output
    assert "mg/dL" in result.output and "--mapping" in result.output


def test_missing_required_column_exits_2(tmp_path):
    path = write(tmp_path, baseline_frame().drop(columns=["product"]))
    result = run("validate", path)
    assert result.exit_code == 2
    assert "error: The baseline table lacks required column(s) product" in result.output


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty.csv", b"", "is empty"),
        ("garbage.csv", bytes(range(256)) * 40, "not UTF-8"),
        ("latin1.csv", "patient_id,site\nA,Z\xfcrich\n".encode("latin-1"), "not UTF-8"),
        ("garbage.parquet", b"\x00\x01garbage", "could not be read as parquet"),
        ("table.xlsx", b"PK\x03\x04", "could not be read as an Excel workbook"),
        ("table.docx", b"PK\x03\x04", "neither CSV, Excel nor Parquet"),
        ("header_only.csv", b"patient_id,age_years\n", "no data rows"),
    ],
)
def test_unusable_files_exit_2_with_one_sentence(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    result = run("validate", path)
    assert result.exit_code == 2
    assert words in result.output
    assert result.output.count("\n") == 1  # one sentence


def test_every_row_invalid_exits_2_and_still_writes_rejected(tmp_path):
    rejected = tmp_path / "rej.csv"
    path = write(tmp_path, baseline_frame().assign(age_years="old"))
    result = run("validate", path, "--rejected", rejected)
    assert result.exit_code == 2
    assert "Every row of the baseline table was rejected" in result.output
    assert len(read_table(rejected)) == 3


def test_mapping_is_applied_before_validation(tmp_path):
    table = baseline_frame().rename(columns={"crp_mg_l": "CRP"})
    table["CRP"] = ["2.5", "0.4", "0.6"]
    table["product"] = ["Yescarta", "Tecvayli", "other_car_t"]
    mapping = tmp_path / "site.yaml"
    mapping.write_text(
        "rename: {CRP: crp_mg_l}\n"
        "recode: {product: {Yescarta: axi-cel, Tecvayli: teclistamab}}\n"
        "units: {crp_mg_l: mg/dL}\n"
    )
    result = run("validate", write(tmp_path, table), "--mapping", mapping,
                 "--rejected", tmp_path / "r.csv")
    assert result.exit_code == 0, result.output
    assert "fingerprint" in result.output


def test_bad_mapping_file_exits_2(tmp_path):
    mapping = tmp_path / "site.yaml"
    mapping.write_text("rename: {CRP: crp_mgl}\n")
    result = run("validate", write(tmp_path, baseline_frame()), "--mapping", mapping)
    assert result.exit_code == 2
    assert "crp_mg_l" in result.output  # the nearest valid name is suggested


def test_events_regrade_other_scales(tmp_path):
    table = baseline_frame().assign(crs_max_grade=["2", "3", "1"],
                                    crs_grading_scale=["Lee2014", "ASTCT", "Penn"])
    events = pd.DataFrame({
        "patient_id": ["P1-0", "P3-0"], "fever": ["true", "true"],
        "hypotension": ["one_vasopressor", "none"], "hypoxia": ["none", "none"],
        "crs_death": ["false", "false"],
    })
    events_path = write(tmp_path, events, "events.csv")
    result = run("validate", write(tmp_path, table), "--events", events_path,
                 "--rejected", tmp_path / "r.csv")
    assert result.exit_code == 0, result.output
    assert "labels: 2 severe (ASTCT >= 3) of 3; 2 regraded from events" in result.output
    refused = run("validate", write(tmp_path, table), "--rejected", tmp_path / "r.csv")
    assert "not usable for training" in refused.output and "--events" in refused.output
