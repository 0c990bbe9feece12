"""The bring-your-own-data walk-through (scripts/walkthrough.py) through the command line: a
site export (xlsx and `;`-CSV) -> suggest-mapping -> review -> validate -> train -> score, in a
fresh folder with its own store. The suggested mapping, unedited, recovers every value of the
contract-form table, and the README shows exactly the commands the script runs. Trains a model
(slow: listed in conftest's SLOW_MODULES)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scripts.walkthrough import STEPS, run_walkthrough

from crsrisk.contract.load import load_baseline
from crsrisk.contract.validate import validate
from crsrisk.io import read_table
from tests.test_cli_scoring import printed_tier_counts, score_table_counts

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("walkthrough") / "site"
    lines: list[str] = []
    ran = run_walkthrough(folder, echo=lines.append)
    return folder, {r.step.args: r for r in ran}, "\n".join(lines)


def test_every_step_ends_as_the_walkthrough_says(walked):
    folder, ran, printed = walked
    for step in STEPS:
        assert ran[step.args].exit_code == step.expected_exit, ran[step.args].output
        assert f"$ crsrisk {shlex.join(step.args)}" in printed
    assert "Traceback" not in printed
    assert "rename:" in printed and "therapy_class: CAR-T" in printed  # the mapping, reviewed
    train = ran[STEPS[3].args].output
    assert "models:/crs-severe/1 version 1" in train
    # The store is the folder's own, whatever the environment names.
    assert f"tracking store: sqlite:///{folder / 'crsrisk-home' / 'mlflow.db'}" in train
    assert (folder / "crsrisk-home" / "mlflow.db").is_file()


@pytest.mark.parametrize("export", ["site_export.csv", "site_export.xlsx"])
def test_the_unedited_mapping_recovers_every_value(walked, export):
    folder, _, _ = walked
    sheet = "baseline" if export.endswith(".xlsx") else None
    got = load_baseline(folder / export, mapping=folder / "mapping.yaml", sheet=sheet).result
    expected = validate(read_table(folder / "contract_form.csv")).valid
    assert got.n_rejected_rows == 0 and got.n_blanked == 0
    pd.testing.assert_frame_equal(got.valid[expected.columns], expected, check_exact=False,
                                  rtol=1e-9)


def test_the_site_export_scores_as_the_contract_form_table(walked):
    folder, _, _ = walked
    site = read_table(folder / "scores.csv")
    contract = read_table(folder / "scores_contract_form.csv")
    assert site["patient_id"].tolist() == contract["patient_id"].tolist()
    np.testing.assert_allclose(site["risk"].astype(float), contract["risk"].astype(float),
                               rtol=0, atol=1e-12)
    assert site["risk_tier"].tolist() == contract["risk_tier"].tolist()
    assert site["planning"].tolist() == contract["planning"].tolist()


def test_the_entry_error_is_blanked_and_with_strict_rejected(walked):
    folder, ran, _ = walked
    blanked = read_table(folder / "scores.rejected.csv")
    assert blanked[["column", "value", "action", "source_column", "source_value"]
                   ].values.tolist() == [["hemoglobin_g_dl", "0.7", "blanked", "Hb (g/L)",
                                          "7.0 g/L"]]
    patient = blanked["patient_id"].iloc[0]
    assert patient in read_table(folder / "scores.csv")["patient_id"].tolist()
    strict = read_table(folder / "scores_strict.rejected.csv")
    assert strict[["patient_id", "action"]].values.tolist() == [[patient, "rejected"]]
    assert patient not in read_table(folder / "scores_strict.csv")["patient_id"].tolist()
    assert "implausible laboratory values reject their row (--strict)" in ran[
        STEPS[5].args].output


def test_the_printed_tier_counts_are_those_of_the_score_table(walked):
    folder, ran, _ = walked
    printed = printed_tier_counts(ran[STEPS[4].args].output)
    incoming = read_table(folder / "contract_form_incoming.csv")
    expected = score_table_counts(read_table(folder / "scores.csv"), incoming)
    assert {k: n for k, n in printed.items() if n and k[0] != "total"} == expected


def test_the_readme_shows_exactly_the_commands_the_script_runs():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Bring your own data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines()
                if line.strip().startswith("crsrisk ")]
    assert commands == [f"crsrisk {shlex.join(step.args)}" for step in STEPS]
    assert "python scripts/walkthrough.py" in section
