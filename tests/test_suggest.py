"""Bring your own data: a site's own export -> suggest-mapping -> (unedited) -> validate -> score.

The site export is built by scripts/walkthrough.py's builder from a contract-form table made
here: English lab names, Hb in g/L, creatinine in umol/L, blasts as a fraction, dose in
cells/kg, brand names, Female/Male, ja/nein, no therapy_class column; once as a `;`-CSV with
decimal commas and dd.mm.yyyy dates, once as xlsx. The suggested mapping, unedited, must
recover every value of the contract-form table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scripts.walkthrough import site_export, write_semicolon_csv
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.contract.load import load_baseline
from crsrisk.contract.mapping import load_mapping
from crsrisk.contract.suggest import suggest_mapping
from crsrisk.contract.validate import validate

runner = CliRunner()
# The products of this cohort (brand names in the export: scripts/walkthrough.py's BRANDS).
PRODUCTS_USED = ["axi-cel", "tisa-cel", "brexu-cel", "obe-cel", "liso-cel"]


def contract_table(n: int = 40) -> pd.DataFrame:
    """A CAR-T cohort in contract form, as text cells."""
    rng = np.random.default_rng(3)
    products = rng.choice(PRODUCTS_USED, n)
    return pd.DataFrame({
        "patient_id": [f"S{i:03d}" for i in range(n)],
        "infusion_date": pd.date_range("2019-01-03", periods=n, freq="17D").strftime("%Y-%m-%d"),
        "age_years": rng.integers(18, 80, n).astype(str),
        "sex": rng.choice(["F", "M"], n),
        "weight_kg": np.round(rng.uniform(45, 110, n), 1).astype(str),
        "diagnosis": np.where(np.isin(products, ["tisa-cel", "obe-cel", "brexu-cel"]),
                              "B-ALL", "LBCL"),
        "therapy_class": "CAR-T",
        "product": products,
        "cell_dose_1e6_per_kg": np.round(rng.uniform(0.5, 3, n), 2).astype(str),
        "bridging_therapy": rng.choice(["true", "false"], n),
        "ldh_u_l": rng.integers(150, 900, n).astype(str),
        "marrow_blasts_pct": np.round(rng.uniform(0, 90, n), 1).astype(str),
        "crp_mg_l": np.round(rng.uniform(1, 80, n), 1).astype(str),
        "platelets_1e9_l": rng.integers(20, 300, n).astype(str),
        "hemoglobin_g_dl": np.round(rng.uniform(7, 15, n), 1).astype(str),
        "creatinine_mg_dl": np.round(rng.uniform(0.5, 2.0, n), 2).astype(str),
    })


@pytest.fixture(params=["csv", "xlsx"])
def export_path(request, tmp_path):
    site = site_export(contract_table())
    if request.param == "csv":
        path = tmp_path / "site_export.csv"
        write_semicolon_csv(site, path)
    else:
        path = tmp_path / "site_export.xlsx"
        site.to_excel(path, index=False)
    return path


def test_unedited_suggestion_recovers_the_contract_table(export_path, tmp_path):
    mapping = tmp_path / "mapping.yaml"
    suggested = runner.invoke(app, ["suggest-mapping", str(export_path), "--out", str(mapping)])
    assert suggested.exit_code == 1, suggested.output  # optional columns absent, listed
    assert "optional columns not found" in suggested.output
    text = mapping.read_text()
    for evidence in ("Hb (g/L): hemoglobin_g_dl", "hemoglobin_g_dl: g/L",
                     "creatinine_mg_dl: umol/L", "marrow_blasts_pct: fraction",
                     "cell_dose_1e6_per_kg: cells_per_kg", "crp_mg_l: mg/dL",
                     "platelets_1e9_l: per_uL", "therapy_class: CAR-T", "Yescarta: axi-cel",
                     "Female: F", "ja: 'true'"):
        assert evidence in text, evidence
    if export_path.suffix == ".csv":
        assert "infusion_date: '%d.%m.%Y'" in text and "delimiter: ;" in text

    validated = runner.invoke(app, ["validate", str(export_path), "--mapping", str(mapping),
                                    "--rejected", str(tmp_path / "rej.csv")])
    assert validated.exit_code == 0, validated.output

    got = load_baseline(export_path, mapping=load_mapping(mapping)).result.valid
    expected = validate(contract_table()).valid
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_exact=False,
                                  rtol=1e-9)


def test_recovered_table_scores_the_same(trained, tmp_path):
    model = trained.load()
    path = tmp_path / "site_export.csv"
    write_semicolon_csv(site_export(contract_table()), path)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(suggest_mapping(path).to_yaml(path.name))
    got = load_baseline(path, mapping=load_mapping(mapping)).result.valid
    expected = validate(contract_table()).valid
    np.testing.assert_allclose(model.score(got, drivers=False)["risk"],
                               model.score(expected, drivers=False)["risk"], rtol=0, atol=1e-12)


def test_a_missing_required_column_exits_2_with_candidates(tmp_path):
    site = site_export(contract_table()).drop(columns=["Date of infusion"])
    site["Infusn dt"] = "01.02.2020"
    path = tmp_path / "site.csv"
    write_semicolon_csv(site.drop(columns=["Infusn dt"]), path)
    result = runner.invoke(app, ["suggest-mapping", str(path), "--out", str(tmp_path / "m.yaml")])
    assert result.exit_code == 2
    assert "required column infusion_date not found" in result.output


def test_mixed_classes_get_no_therapy_class_constant(tmp_path):
    site = site_export(contract_table())
    site.loc[0, "Product"] = "Tecvayli"
    path = tmp_path / "site.csv"
    write_semicolon_csv(site, path)
    suggestion = suggest_mapping(path)
    assert "therapy_class" not in suggestion.constants
    assert "therapy_class" in suggestion.missing_required
    assert suggestion.exit_code == 2


def test_scoring_a_site_export_in_chunks_accounts_for_every_row(trained, tmp_path):
    """Scored through the same mapping, chunk by chunk: an unreadable row is rejected with its
    line, an implausible Hb is blanked and the patient scored, and the counts add up."""
    site = site_export(contract_table(12))
    site["Hb (g/L)"] = site["Hb (g/L)"].astype(object)
    site.loc[3, "Hb (g/L)"] = 1.0  # 0.1 g/dL: an entry error
    path = tmp_path / "site_export.csv"
    write_semicolon_csv(site, path)
    lines = path.read_text().splitlines()
    lines[8] = lines[8].rsplit(";", 3)[0]  # data row 8, cut short
    path.write_text("\n".join(lines) + "\n")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(suggest_mapping(path).to_yaml(path.name))
    from crsrisk.scoring.batch import score_file

    summary = score_file(path, tmp_path / "scores.csv", model=trained.load(), mapping=mapping,
                         chunk_size=5, drivers=False, progress=False)
    assert (summary.n_read, summary.n_scored, summary.n_rejected) == (12, 11, 1)
    assert summary.n_blanked == 1
    rejected = pd.read_csv(tmp_path / "scores.rejected.csv", dtype=str, keep_default_na=False)
    assert rejected[["row_number", "column", "action", "source_column", "source_value"]
                    ].values.tolist() == [
        ["4", "hemoglobin_g_dl", "blanked", "Hb (g/L)", "1.0 g/L"],
        ["8", "(whole row)", "rejected", "", ""],
    ]
    assert rejected["check"].iloc[1].startswith("has 12 fields where the header has 15 (line 9")
