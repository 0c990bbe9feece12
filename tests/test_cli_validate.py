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
from crsrisk.contract.load import load_baseline
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


# --- header drift, unreadable rows, implausible labs (nothing dropped in silence) --------------


def test_trailing_space_and_case_in_a_header_are_matched_with_a_warning(tmp_path):
    table = baseline_frame(2).rename(columns={"crp_mg_l": "crp_mg_l ", "ldh_u_l": "LDH_U_L"})
    result = run("validate", write(tmp_path, table), "--rejected", tmp_path / "rej.csv")
    assert result.exit_code == 0, result.output
    assert "column 'crp_mg_l ' was read as 'crp_mg_l'" in result.output
    assert "column 'LDH_U_L' was read as 'ldh_u_l'" in result.output


def test_a_column_twice_after_case_folding_is_refused(tmp_path):
    table = baseline_frame().assign(CRP_mg_L="9")
    result = run("validate", write(tmp_path, table), "--rejected", tmp_path / "rej.csv")
    assert result.exit_code == 2
    assert "'crp_mg_l', 'CRP_mg_L'" in result.output


def test_an_exactly_duplicated_column_is_refused(tmp_path):
    path = tmp_path / "in.csv"
    text = write(tmp_path, baseline_frame()).read_text().splitlines()
    path.write_text("\n".join([text[0] + ",crp_mg_l"] + [row + ",7" for row in text[1:]]) + "\n")
    result = run("validate", path, "--rejected", tmp_path / "rej.csv")
    assert result.exit_code == 2
    assert "has the column 'crp_mg_l' twice" in result.output


@pytest.mark.parametrize(("cut", "fields"), [("short", 28), ("long", 30)])
def test_a_row_with_the_wrong_number_of_fields_is_rejected_with_its_line(tmp_path, cut, fields):
    path = write(tmp_path, baseline_frame(2))
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] if cut == "short" else lines[2] + ",extra"
    path.write_text("\n".join(lines) + "\n")
    rejected = tmp_path / "rej.csv"
    result = run("validate", path, "--rejected", rejected)
    assert result.exit_code == 1, result.output
    assert "read 6 rows: 5 valid, 1 rejected" in result.output
    out = read_table(rejected)
    assert out["row_number"].tolist() == ["2"]
    assert out["column"].tolist() == ["(whole row)"]
    assert f"has {fields} fields where the header has 29 (line 3 of the file)" in out["check"][0]


def test_an_implausible_lab_is_blanked_and_the_patient_kept(tmp_path):
    """The PrCRS-like case: Hb 0.1 g/dL and LDH 8 U/L are entry errors, not reasons to lose
    the patient; they are blanked, reported as the site wrote them, and the row is used."""
    table = baseline_frame(2)
    table.loc[0, "hemoglobin_g_dl"] = "0.1"
    table.loc[1, "ldh_u_l"] = "8"
    path = write(tmp_path, table)
    rejected = tmp_path / "rej.csv"
    result = run("validate", path, "--rejected", rejected)
    assert result.exit_code == 1, result.output
    assert "6 valid, 0 rejected, 2 implausible value(s) blanked" in result.output
    out = read_table(rejected)
    assert out[["row_number", "column", "value", "action"]].values.tolist() == [
        ["1", "hemoglobin_g_dl", "0.1", "blanked"], ["2", "ldh_u_l", "8", "blanked"]]
    loaded = load_baseline(path)
    assert len(loaded.result.valid) == 6
    valid = loaded.result.valid
    assert pd.isna(valid.loc[0, "hemoglobin_g_dl"]) and pd.isna(valid.loc[1, "ldh_u_l"])
    assert valid.loc[3, "hemoglobin_g_dl"] == 11  # the same patient's copy, untouched

    strict = run("validate", path, "--rejected", rejected, "--strict")
    assert "4 valid, 2 rejected" in strict.output


def test_a_blanked_value_is_shown_as_the_site_wrote_it(tmp_path):
    table = baseline_frame(2).rename(columns={"hemoglobin_g_dl": "Hb"})
    table["Hb"] = ["110", "7", "120", "105", "130", "98"]
    path = write(tmp_path, table)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("rename: {Hb: hemoglobin_g_dl}\nunits: {hemoglobin_g_dl: g/L}\n")
    rejected = tmp_path / "rej.csv"
    run("validate", path, "--mapping", mapping, "--rejected", rejected)
    row = read_table(rejected).iloc[0]
    assert [row["value"], row["source_column"], row["source_value"], row["action"]] == [
        "0.7", "Hb", "7 g/L", "blanked"]


def test_rejected_file_equal_to_the_input_is_refused(tmp_path):
    path = write(tmp_path, baseline_frame())
    before = path.read_text()
    result = run("validate", path, "--rejected", path)
    assert result.exit_code == 2
    assert "would overwrite the input" in result.output
    assert path.read_text() == before


def test_a_semicolon_file_is_read_not_told_it_lacks_columns(tmp_path):
    path = tmp_path / "in.csv"
    baseline_frame(2).to_csv(path, sep=";", index=False)
    result = run("validate", path, "--rejected", tmp_path / "rej.csv")
    assert result.exit_code == 0, result.output
    assert "lacks required" not in result.output


def test_mapping_sources_absent_from_the_file_are_warned_of(tmp_path):
    path = write(tmp_path, baseline_frame(2).drop(columns=["crp_mg_l"]))
    mapping = tmp_path / "m.yaml"
    mapping.write_text("rename: {CRP: crp_mg_l}\nunits: {crp_mg_l: mg/dL}\n")
    result = run("validate", path, "--mapping", mapping, "--rejected", tmp_path / "rej.csv")
    assert "mapping rename 'CRP' -> crp_mg_l: the table has no column 'CRP'" in result.output
    assert "mapping units names crp_mg_l, which the table does not have" in result.output


# ------------------------------------------------------------------------------------------
# train, evaluate, recalibrate and report read their data as validate does (--sheet, --strict)
# ------------------------------------------------------------------------------------------


def labelled(n_copies: int = 2) -> pd.DataFrame:
    table = baseline_frame(n_copies)
    table["crs_max_grade"] = ["0", "3", "1"] * n_copies
    table["crs_grading_scale"] = "ASTCT"
    return table


def test_train_says_its_blanking_policy_and_strict_rejects(tmp_path):
    table = labelled()
    table.loc[0, "hemoglobin_g_dl"] = "0.1"
    path = write(tmp_path, table)
    # Six rows are too few to train on: the command stops after reading them, exit 2.
    blanked = run("train", "--data", path)
    assert "read 6 rows: 6 valid, 0 rejected, 1 implausible value(s) blanked" in blanked.output
    assert "implausible laboratory values are blanked and their row used" in blanked.output
    strict = run("train", "--data", path, "--strict")
    assert "read 6 rows: 5 valid, 1 rejected" in strict.output
    assert "implausible laboratory values reject their row (--strict)" in strict.output


@pytest.mark.parametrize("command", ["train", "evaluate", "recalibrate", "report"])
def test_data_commands_take_sheet_and_name_the_sheets_of_a_workbook(tmp_path, command):
    workbook = tmp_path / "cohort.xlsx"
    with pd.ExcelWriter(workbook) as writer:
        labelled().to_excel(writer, sheet_name="cohort", index=False)
    args = [command, "--data", workbook, "--sheet", "cohort 2024"]
    if command == "report":
        args += ["--out", tmp_path / "r.html"]
    if command != "train":  # a model to load first: an exported one needs no store
        args += ["--model", tmp_path / "no-model-here"]
    result = run(*args)
    assert result.exit_code == 2, result.output
    if command == "train":
        assert "has no sheet 'cohort 2024': its sheets are 'cohort'" in result.output
    else:
        assert "--sheet" not in result.output  # the option is known; the model fails first


def test_report_refuses_sheet_or_strict_without_data(tmp_path):
    result = run("report", "--out", tmp_path / "r.html", "--strict")
    assert result.exit_code == 2 and "give --data too" in result.output
