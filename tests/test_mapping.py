"""Site column mappings: rename, recode, units."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.config import ConfigError, load_simulation_config, load_yaml_model
from crsrisk.contract.mapping import (
    CONVERSIONS,
    PROBLEM_COLUMNS,
    MappedTable,
    MappingError,
    SiteMapping,
    apply_mapping,
    load_mapping,
)
from crsrisk.contract.spec import BASELINE_COLUMNS
from crsrisk.errors import CrsriskError
from tests.conftest import baseline_frame

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "mapping.example.yaml"


def raw(**columns: list) -> pd.DataFrame:
    """A raw table as read from CSV: every cell a string, missing as NaN."""
    return pd.DataFrame({k: pd.Series(v, dtype="str") for k, v in columns.items()})


def mapped(df: pd.DataFrame, row_offset: int = 0, **mapping) -> MappedTable:
    before = df.copy(deep=True)
    out = apply_mapping(df, SiteMapping(**mapping), row_offset=row_offset)
    pd.testing.assert_frame_equal(df, before)  # the input is never modified
    return out


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- rename and recode --------------------------------------------------------------------------


def test_rename_and_untouched_columns_pass_through():
    df = raw(MRN_pseudo=["a", "b"], CRP=["1", "2"], ward=["B3", None])
    out = mapped(df, rename={"MRN_pseudo": "patient_id", "CRP": "crp_mg_l", "absent": "site"})
    assert out.frame.columns.tolist() == ["patient_id", "crp_mg_l", "ward"]
    assert out.frame["crp_mg_l"].tolist() == ["1", "2"]
    pd.testing.assert_series_equal(out.frame["ward"], df["ward"])
    assert out.problems.empty


def test_rename_onto_an_existing_column_is_refused():
    df = raw(CRP=["1"], crp_mg_l=["2"])
    with pytest.raises(MappingError, match="two columns the name 'crp_mg_l'"):
        apply_mapping(df, SiteMapping(rename={"CRP": "crp_mg_l"}))


def test_recode_is_case_insensitive_and_ignores_spaces():
    df = raw(
        product=[" yescarta ", "KYMRIAH", "Breyanzi", "NewCAR", None],
        sex=["Female", " male", "unknown", "X", None],
    )
    out = mapped(
        df,
        recode={
            "product": {"Yescarta": "axi-cel", "Kymriah": "tisa-cel", "breyanzi ": "liso-cel"},
            "sex": {"female": "F", "male": "M", "Unknown": None},
        },
    )
    # Values not in the recode are left as they are, for the validator to report.
    assert out.frame["product"].tolist() == ["axi-cel", "tisa-cel", "liso-cel", "NewCAR", np.nan]
    assert out.frame["sex"].tolist() == ["F", "M", np.nan, "X", np.nan]
    assert pd.api.types.is_string_dtype(out.frame["sex"].dtype)


def test_recode_categorical_and_integer_codes():
    df = pd.DataFrame(
        {
            "sex": pd.Series([1, 2, 3]),
            "product": pd.Series(["Abecma", "Carvykti", None], dtype="category"),
        }
    )
    out = mapped(df, recode={"sex": {"1": "F", "2": "M"}, "product": {"abecma": "ide-cel"}})
    assert out.frame["sex"].tolist() == ["F", "M", 3]
    assert out.frame["product"].tolist() == ["ide-cel", "Carvykti", np.nan]


# --- units --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "unit", "value", "expected"),
    [
        ("crp_mg_l", "mg/dL", "2.5", 25.0),
        ("crp_mg_l", "mg/L", "25", 25.0),
        ("creatinine_mg_dl", "umol/L", "176.8", 2.0),
        ("platelets_1e9_l", "per_uL", "150000", 150.0),
        ("platelets_1e9_l", "1e3_per_uL", "150", 150.0),
        ("hemoglobin_g_dl", "g/L", "120", 12.0),
        ("hemoglobin_g_dl", "mmol/L", "7.5", 12.0825),
        ("ferritin_ng_ml", "ug/L", "512", 512.0),
        ("weight_kg", "lb", "220", 99.7903214),
    ],
)
def test_each_conversion(column, unit, value, expected):
    out = mapped(raw(**{column: [value, None]}), units={column: unit})
    assert out.frame[column].dtype == "float64"
    assert out.frame[column].iloc[0] == pytest.approx(expected, rel=1e-9)
    assert math.isnan(out.frame[column].iloc[1])


def test_conversion_of_typed_parquet_columns():
    df = pd.DataFrame({"crp_mg_l": [1.5, np.nan], "creatinine_mg_dl": pd.array([88, None])})
    out = mapped(df, units={"crp_mg_l": "mg/dL", "creatinine_mg_dl": "umol/L"})
    assert out.frame["crp_mg_l"].tolist()[0] == pytest.approx(15.0)
    assert out.frame["creatinine_mg_dl"].iloc[0] == pytest.approx(88 / 88.4)
    assert out.frame[["crp_mg_l", "creatinine_mg_dl"]].iloc[1].isna().all()


def test_value_that_is_not_a_number_is_left_for_the_validator():
    out = mapped(raw(crp_mg_l=["1.2", "<0.5", " 3 ", None]), units={"crp_mg_l": "mg/dL"})
    values = out.frame["crp_mg_l"].tolist()
    assert values[0] == pytest.approx(12.0)
    assert values[1] == "<0.5"
    assert values[2] == pytest.approx(30.0)
    assert pd.isna(values[3])
    assert out.problems.empty


@pytest.mark.parametrize(
    ("unit", "dose", "expected"),
    [("total_1e6_cells", "200", 2.5), ("total_1e8_cells", "2", 2.5)],
)
def test_total_cell_dose_divided_by_weight(unit, dose, expected):
    out = mapped(
        raw(patient_id=["a"], weight_kg=["80"], dose=[dose]),
        rename={"dose": "cell_dose_1e6_per_kg"},
        units={"cell_dose_1e6_per_kg": unit},
    )
    assert out.frame["cell_dose_1e6_per_kg"].iloc[0] == pytest.approx(expected)
    assert out.problems.empty


def test_total_cell_dose_uses_the_weight_converted_from_pounds():
    # 200 lb = 90.718474 kg; 181.436948e6 cells / 90.718474 kg = 2.0e6 per kg.
    out = mapped(
        raw(weight_kg=["200"], cell_dose_1e6_per_kg=["181.436948"]),
        units={"cell_dose_1e6_per_kg": "total_1e6_cells", "weight_kg": "lb"},
    )
    assert out.frame["weight_kg"].iloc[0] == pytest.approx(90.718474)
    assert out.frame["cell_dose_1e6_per_kg"].iloc[0] == pytest.approx(2.0)


def test_total_cell_dose_without_a_usable_weight_becomes_a_problem_row():
    df = raw(
        MRN=["a", "b", "c", "d", "e", "f"],
        weight_kg=["80", None, "0", "eighty", "70", None],
        CAR_dose_total=["160", "150", "140", "130", None, "n/a"],
    ).set_axis([50, 51, 52, 53, 54, 55])
    out = mapped(
        df,
        row_offset=1000,
        rename={"MRN": "patient_id", "CAR_dose_total": "cell_dose_1e6_per_kg"},
        units={"cell_dose_1e6_per_kg": "total_1e6_cells"},
    )
    dose = out.frame["cell_dose_1e6_per_kg"]
    assert dose.iloc[0] == pytest.approx(2.0)
    assert dose.iloc[1:5].isna().all()  # no weight, zero weight, unreadable weight, no dose
    assert dose.iloc[5] == "n/a"  # not a number: for the validator
    assert out.frame.index.tolist() == [50, 51, 52, 53, 54, 55]
    problems = out.problems
    assert problems.columns.tolist() == list(PROBLEM_COLUMNS)
    assert problems["row_number"].tolist() == [1002, 1003, 1004]
    assert problems["patient_id"].tolist() == ["b", "c", "d"]
    assert problems["column"].tolist() == ["cell_dose_1e6_per_kg"] * 3
    assert set(problems["check"]) == {"total cell dose needs weight_kg to convert to per kg"}
    assert problems["value"].tolist() == ["150", "140", "130"]


def test_total_cell_dose_without_a_weight_column():
    out = mapped(
        raw(cell_dose_1e6_per_kg=["100", None]),
        units={"cell_dose_1e6_per_kg": "total_1e6_cells"},
    )
    assert out.frame["cell_dose_1e6_per_kg"].isna().all()
    assert out.problems["row_number"].tolist() == [1]
    assert out.problems["patient_id"].isna().all()


def test_no_problems_is_an_empty_frame_with_the_rejected_columns():
    problems = mapped(raw(crp_mg_l=["1"]), units={"crp_mg_l": "mg/dL"}).problems
    assert problems.columns.tolist() == list(PROBLEM_COLUMNS)
    assert problems["row_number"].dtype == "int64"
    assert len(problems) == 0


def test_every_conversion_explains_its_factor():
    assert all(c.why and c.factor > 0 for c in CONVERSIONS.values())


# --- mapping files ------------------------------------------------------------------------------


def test_example_file_loads_and_applies():
    mapping = load_mapping(EXAMPLE)
    assert mapping.rename["CRP"] == "crp_mg_l"
    assert mapping.recode["product"]["Imdelltra"] == "tarlatamab"
    df = raw(
        MRN_pseudo=["s1"],
        product=["YESCARTA"],
        sex=["Female"],
        weight_kg=["80"],
        CRP=["2"],
        Creat=["88.4"],
        PLT=["210000"],
        CAR_dose_total=["160"],
    )
    frame = apply_mapping(df, mapping).frame
    assert frame.iloc[0][["patient_id", "product", "sex"]].tolist() == ["s1", "axi-cel", "F"]
    numbers = frame.iloc[0][
        ["crp_mg_l", "creatinine_mg_dl", "platelets_1e9_l", "cell_dose_1e6_per_kg"]
    ]
    assert numbers.astype(float).tolist() == pytest.approx([20.0, 1.0, 210.0, 2.0])


def test_yaml_codes_are_read_as_text(tmp_path):
    mapping = load_mapping(
        write(tmp_path, "recode:\n  sex: {1: F, 2: M, no: null}\n  ecog: {yes: 1}\n")
    )
    assert mapping.recode["sex"] == {"1": "F", "2": "M", "no": None}
    assert mapping.recode["ecog"] == {"yes": "1"}


def test_empty_sections_are_allowed(tmp_path):
    assert load_mapping(write(tmp_path, "rename:\nunits: {}\n")) == SiteMapping()


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("rename: {CRP: crp_mgl}\n", r"rename names 'crp_mgl'.*did you mean 'crp_mg_l'"),
        ("units: {crp_mg_dl: mg/dL}\n", r"units names 'crp_mg_dl'.*did you mean 'crp_mg_l'"),
        (
            "units: {crp_mg_l: mg/dl}\n",
            r"unknown unit 'mg/dl' for crp_mg_l: use one of mg/L, mg/dL",
        ),
        (
            "units: {ldh_u_l: ukat/L}\n",
            r"units names ldh_u_l, which has no unit conversion.*crp_mg_l",
        ),
        ("rename: {CRP: crp_mg_l, crp: crp_mg_l}\n", r"'CRP' and 'crp' both to 'crp_mg_l'"),
        ("recode: {product: {Yescarta: axicel}}\n", r"not a level \(did you mean 'axi-cel'"),
        ("renames: {CRP: crp_mg_l}\n", r"unknown section 'renames' \(did you mean 'rename'\?\)"),
        ("rename: [CRP, crp_mg_l]\n", r"malformed at rename"),
        ("- rename\n", r"not a YAML mapping"),
        ("", r"not a YAML mapping"),
        ("rename: {CRP: crp_mg_l\n", r"not valid YAML at line \d+, column \d+"),
    ],
)
def test_bad_mapping_files(tmp_path, text, pattern):
    with pytest.raises(MappingError, match=pattern):
        load_mapping(write(tmp_path, text))


def test_missing_mapping_file(tmp_path):
    with pytest.raises(MappingError, match=r"nowhere\.yaml does not exist"):
        load_mapping(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("units: {crp_mg_l: mg/dl}\n", "crp_mg_l"),
        ("renames: {CRP: crp_mg_l}\n", "renames"),
        ("rename: [CRP, crp_mg_l]\n", "rename"),
        ("file: {delimiter: ';;'}\n", "one character"),
        ("file: {delimeter: ';'}\n", "unknown file option 'delimeter' (did you mean 'delimiter'"),
    ],
)
def test_a_bad_mapping_is_one_sentence_naming_the_file_and_the_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    message = str(caught.value)
    assert message.startswith(f"Mapping file {path}") and key in message
    assert "\n" not in message and "pydantic" not in message.lower()


def test_mapping_and_config_files_share_one_loader(tmp_path):
    """A YAML mistake reads the same in a mapping and in a config: one loader reads both."""
    broken = "rename: {CRP: crp_mg_l\n"
    mapping, config = tmp_path / "mapping.yaml", tmp_path / "simulate.yaml"
    mapping.write_text(broken, encoding="utf-8")
    config.write_text(broken, encoding="utf-8")
    with pytest.raises(MappingError) as from_mapping:
        load_mapping(mapping)
    with pytest.raises(ConfigError) as from_config:
        load_simulation_config(config)
    assert str(from_mapping.value).replace("Mapping file", "Config file").replace(
        "mapping.yaml", "simulate.yaml") == str(from_config.value)
    for path, loader in ((mapping, load_mapping), (config, load_simulation_config)):
        path.write_text("- a list\n", encoding="utf-8")
        with pytest.raises(CrsriskError, match="is not a YAML mapping"):
            loader(path)


def test_the_generic_loader_reads_text_and_names_bad_keys(tmp_path):
    class Codes(pydantic.BaseModel, extra="forbid"):
        codes: dict[str, str | None] = {}

    path = write(tmp_path, "codes: {1: yes, no: null, 2.0: on}\n")
    assert load_yaml_model(path, Codes, text=True).codes == {"1": "yes", "no": None, "2.0": "on"}
    with pytest.raises(ConfigError, match=r"Config file .*mapping\.yaml: codes\.1\b"):
        load_yaml_model(path, Codes)  # without text, yes/on are booleans and 1 a number


def test_the_contract_unit_as_the_contract_writes_it_is_a_mapping_unit():
    """A site may state a column is in the contract's unit, as docs/contract.md writes it."""
    specs = {c.name: c for c in BASELINE_COLUMNS}
    for column in dict.fromkeys(c for c, _ in CONVERSIONS):
        assert CONVERSIONS[(column, specs[column].unit)] == (1.0, False, "contract unit")
    out = mapped(raw(platelets_1e9_l=["150"]), units={"platelets_1e9_l": "10^9/L"})
    assert out.frame["platelets_1e9_l"].iloc[0] == 150.0
    assert CONVERSIONS[("platelets_1e9_l", "1e9/L")].factor == 1.0  # the earlier spelling


def test_a_bad_mapping_exits_2_with_one_line_naming_file_and_key(tmp_path):
    table = tmp_path / "in.csv"
    baseline_frame().to_csv(table, index=False)
    path = write(tmp_path, "units: {crp_mg_l: mg/dl}\n")
    result = CliRunner().invoke(app, ["validate", str(table), "--mapping", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and "crp_mg_l" in lines[0], lines
    assert "Traceback" not in result.output


def test_fingerprint_ignores_key_order_and_tells_mappings_apart(tmp_path):
    one = load_mapping(
        write(tmp_path, "rename: {CRP: crp_mg_l, PLT: platelets_1e9_l}\nunits: {crp_mg_l: mg/dL}\n")
    )
    two = SiteMapping(
        units={"crp_mg_l": "mg/dL"}, rename={"PLT": "platelets_1e9_l", "CRP": "crp_mg_l"}
    )
    other = SiteMapping(rename={"CRP": "crp_mg_l", "PLT": "platelets_1e9_l"})
    assert one.fingerprint() == two.fingerprint()
    assert one.fingerprint() != other.fingerprint()
    assert len(one.fingerprint()) == 64
    assert one.to_dict() == {
        "rename": {"CRP": "crp_mg_l", "PLT": "platelets_1e9_l"},
        "recode": {},
        "units": {"crp_mg_l": "mg/dL"},
    }


def test_mapping_is_frozen():
    mapping = SiteMapping()
    with pytest.raises(ValueError, match="frozen"):
        mapping.rename = {"a": "patient_id"}


# --- what sites need: constants, dates, more units, warnings, sources ---------------------------


def test_constants_add_an_absent_column_and_fill_a_present_one():
    out = mapped(raw(patient_id=["a", "b"]), constants={"therapy_class": "CAR-T"})
    assert out.frame["therapy_class"].tolist() == ["CAR-T", "CAR-T"]
    assert out.warnings == ()
    filled = mapped(raw(site=["A", None]), constants={"site": "Munich"})
    assert filled.frame["site"].tolist() == ["A", "Munich"]
    assert "keeps" in filled.warnings[0] or "kept" in filled.warnings[0]


def test_a_constant_outside_the_levels_is_refused():
    with pytest.raises(pydantic.ValidationError, match="not a level"):
        SiteMapping(constants={"therapy_class": "CART"})


@pytest.mark.parametrize(("fmt", "cells"), [
    ("%d.%m.%Y", ["04.03.2021", "2021-03-04", "31.02.2021", None]),
    ("%m/%d/%Y", ["03/04/2021", "2021-03-04", "02/31/2021", None]),
])
def test_dates_in_the_site_format_become_iso(fmt, cells):
    out = mapped(raw(patient_id=list("abcd"), infusion_date=cells), dates={"infusion_date": fmt})
    assert out.frame["infusion_date"].tolist()[:2] == ["2021-03-04", "2021-03-04"]
    assert pd.isna(out.frame["infusion_date"].iloc[2])
    assert out.problems[["row_number", "value", "action"]].values.tolist() == [
        [3, cells[2], "rejected"]]
    assert fmt in out.problems["check"].iloc[0]


@pytest.mark.parametrize(("column", "unit", "given", "expected"), [
    ("hemoglobin_g_dl", "g/L", "110", 11.0),
    ("marrow_blasts_pct", "fraction", "0.4", 40.0),
    ("cell_dose_1e6_per_kg", "cells_per_kg", "2000000", 2.0),
    ("platelets_1e9_l", "1e3_per_uL", "150", 150.0),
    ("platelets_1e9_l", "per_uL", "150000", 150.0),
    ("creatinine_mg_dl", "umol/L", "88.4", 1.0),
    ("crp_mg_l", "mg/dL", "2.5", 25.0),
    ("anc_1e9_l", "per_uL", "3100", 3.1),
])
def test_site_units_convert_to_the_contract_unit(column, unit, given, expected):
    out = mapped(raw(**{column: [given]}), units={column: unit})
    assert float(out.frame[column].iloc[0]) == pytest.approx(expected)


def test_total_cells_are_divided_by_weight():
    out = mapped(raw(weight_kg=["80"], dose=["160000000"]),
                 rename={"dose": "cell_dose_1e6_per_kg"},
                 units={"cell_dose_1e6_per_kg": "total_cells"})
    assert out.frame["cell_dose_1e6_per_kg"].iloc[0] == pytest.approx(2.0)


def test_sources_absent_from_the_table_are_warned_of():
    """The example mapping on a correctly named file: every source is absent, and said so."""
    df = raw(patient_id=["a"], crp_mg_l=["25"], creatinine_mg_dl=["0.9"])
    out = apply_mapping(df, load_mapping(EXAMPLE))
    said = " ".join(out.warnings)
    for source in ("MRN_pseudo", "PLT", "CAR_dose_total"):
        assert f"mapping rename '{source}'" in said
    assert "units names platelets_1e9_l, which the table does not have" in said
    # The units were said of the absent source CRP, not of the table's own crp_mg_l (mg/L).
    assert out.frame["crp_mg_l"].tolist() == ["25"]
    assert "table's own crp_mg_l is not converted" in said
    assert out.frame["creatinine_mg_dl"].tolist() == ["0.9"]


def test_rename_sources_match_ignoring_case_and_spaces_with_a_warning():
    out = mapped(raw(**{"crp ": ["2"]}), rename={"CRP": "crp_mg_l"})
    assert out.frame.columns.tolist() == ["crp_mg_l"]
    assert "matched the table's column 'crp '" in out.warnings[0]


def test_sources_keep_the_value_as_the_site_wrote_it():
    out = mapped(raw(Hb=["70", "7"]), rename={"Hb": "hemoglobin_g_dl"},
                 units={"hemoglobin_g_dl": "g/L"})
    source = out.sources["hemoglobin_g_dl"]
    assert (source.column, source.shown(1)) == ("Hb", "7 g/L")


def test_file_options_are_read_and_checked(tmp_path):
    mapping = load_mapping(write(tmp_path, "file: {delimiter: ';', decimal: ','}\n"))
    assert (mapping.file.delimiter, mapping.file.decimal) == (";", ",")
    with pytest.raises(MappingError, match="one character"):
        load_mapping(write(tmp_path, "file: {delimiter: ';;'}\n"))


def test_new_sections_leave_old_fingerprints_alone():
    old = SiteMapping(rename={"CRP": "crp_mg_l"})
    assert set(old.to_dict()) == {"rename", "recode", "units"}
    assert SiteMapping(rename={"CRP": "crp_mg_l"}, dates={"infusion_date": "%d.%m.%Y"}
                       ).fingerprint() != old.fingerprint()
