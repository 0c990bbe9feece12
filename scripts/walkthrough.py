"""Bring your own data, end to end through the command line, from an empty folder.

Builds a site-style export of simulated CAR-T patients (the site's own column names and units:
"CRP (mg/dL)", Hb in g/L, creatinine in umol/L, blasts as a fraction, dose in cells/kg, brand
names, Female/Male, ja/nein, long diagnosis names, dd.mm.yyyy dates, no therapy_class column),
once as an Excel workbook (a cover sheet first, the table on sheet "baseline") and once as a
`;`-separated CSV with decimal commas. Then runs, printing each command and its output:

    crsrisk suggest-mapping -> (review: the mapping is printed) -> crsrisk validate ->
    crsrisk train -> crsrisk score (blanking an implausible value, then --strict)

and finally scores the same incoming patients written in the contract's own form, to show that
the suggested mapping, unedited, gives the same risks. Nothing outside the folder is touched:
the tracking store and registry live in it (CRSRISK_HOME).

    python scripts/walkthrough.py [FOLDER] [--patients N]

FOLDER must be empty or absent (default: a new temporary folder, kept for you to look at).
Exit 0 when every step did what the walk-through expects, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crsrisk.contract.products import PRODUCTS

__all__ = [
    "BRANDS",
    "LONG_DIAGNOSES",
    "STEPS",
    "TRAIN_CONFIG",
    "Step",
    "build_exports",
    "contract_form",
    "main",
    "run_walkthrough",
    "site_export",
    "write_semicolon_csv",
]

# The site exports CAR-T products by brand name.
BRANDS = {name: product.brands[0] for name, product in PRODUCTS.items()
          if product.therapy_class == "CAR-T" and product.brands}
LONG_DIAGNOSES = {"LBCL": "diffuse large B-cell lymphoma", "FL": "follicular lymphoma",
                  "MCL": "mantle cell lymphoma", "B-ALL": "acute lymphoblastic leukemia",
                  "CLL": "chronic lymphocytic leukemia", "MM": "multiple myeloma"}
# The contract columns a site export carries (and the decimals the site writes them with).
DECIMALS = {"age_years": 0, "weight_kg": 1, "cell_dose_1e6_per_kg": 2, "ldh_u_l": 0,
            "marrow_blasts_pct": 1, "crp_mg_l": 1, "ferritin_ng_ml": 0, "platelets_1e9_l": 0,
            "hemoglobin_g_dl": 1, "creatinine_mg_dl": 2}
TEXT_COLUMNS = ("patient_id", "infusion_date", "sex", "diagnosis", "therapy_class", "product",
                "bridging_therapy", "crs_max_grade", "crs_grading_scale")

# A training configuration that runs in a few minutes on a laptop: fewer candidates, search
# steps and bootstrap repeats than configs/train.yaml (use that one for real work).
TRAIN_CONFIG = """\
candidates: [m_easix, parsimonious]
validation:
  design: bootstrap
  bootstrap_repeats: 10
uncertainty:
  models: 10
cv:
  folds: 3
search:
  parsimonious_c: [0.1, 1.0]
"""


def contract_form(n: int, seed: int = 7, *, outcome: bool = True) -> pd.DataFrame:
    """``n`` simulated CAR-T patients in the contract's own form, as text cells (missing: None).

    Patient ids start at ``seed * 10,000`` so that two cohorts of different seeds share none.
    """
    from crsrisk.simulate.cohort import simulate_cohort

    cohort = simulate_cohort(4 * n + 200, seed=seed).baseline
    cohort = cohort[cohort["product"].isin(list(BRANDS))].head(n).reset_index(drop=True)
    if len(cohort) < n:
        raise ValueError(f"the simulated cohort holds only {len(cohort)} such patients")
    table = pd.DataFrame({"patient_id": [f"S{seed * 10_000 + i:06d}" for i in range(n)]})
    table["infusion_date"] = cohort["infusion_date"].dt.strftime("%Y-%m-%d")
    for name in ("sex", "diagnosis", "therapy_class", "product"):
        table[name] = cohort[name]
    table["bridging_therapy"] = cohort["bridging_therapy"].map({True: "true", False: "false"})
    for name, places in DECIMALS.items():
        values = cohort[name].astype("float64").round(places)
        table[name] = [None if pd.isna(v) else f"{v:.{places}f}" for v in values]
    if outcome:
        table["crs_max_grade"] = cohort["crs_max_grade"].astype("str")
        table["crs_grading_scale"] = "ASTCT"
    ordered = [c for c in (*TEXT_COLUMNS, *DECIMALS) if c in table.columns]
    return table[ordered].astype(object).where(table[ordered].notna(), None)


def site_export(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a contract-form ``table`` as a site would export them (its own names, units
    and codes; the columns the table has)."""

    def number(name: str) -> pd.Series:
        return pd.to_numeric(table[name], errors="coerce")

    def whole(values: pd.Series) -> pd.Series:
        return values.round().astype("Int64")

    out = {
        "Patient ID": table["patient_id"],
        "Date of infusion": pd.to_datetime(table["infusion_date"]).dt.strftime("%d.%m.%Y"),
        "Age": whole(number("age_years")),
        "Gender": table["sex"].map({"F": "Female", "M": "Male"}),
        "Weight": number("weight_kg"),
        "Diagnosis": table["diagnosis"].map(LONG_DIAGNOSES),
        "Product": table["product"].map(BRANDS),
        "Cell dose (cells/kg)": whole(number("cell_dose_1e6_per_kg") * 1e6),
        "Bridging": table["bridging_therapy"].map({"true": "ja", "false": "nein"}),
        "LDH": whole(number("ldh_u_l")),
        "BM blasts (fraction)": (number("marrow_blasts_pct") / 100).round(6),
        "CRP (mg/dL)": (number("crp_mg_l") / 10).round(6),
        "Platelets (/uL)": whole(number("platelets_1e9_l") * 1000),
        "Hb (g/L)": (number("hemoglobin_g_dl") * 10).round(6),
        "kreatinin_umol_l": (number("creatinine_mg_dl") * 88.4).round(3),
    }
    if "ferritin_ng_ml" in table.columns:
        out["Ferritin"] = whole(number("ferritin_ng_ml"))
    if "crs_max_grade" in table.columns:
        out["CRS grade (ASTCT)"] = table["crs_max_grade"]
    return pd.DataFrame(out)


def write_semicolon_csv(df: pd.DataFrame, path: Path) -> None:
    """A `;`-separated CSV with decimal commas, as spreadsheet programs in much of Europe save."""
    df.to_csv(path, sep=";", decimal=",", index=False)


def write_workbook(df: pd.DataFrame, path: Path) -> None:
    """An Excel export: a cover sheet first, the table on the sheet "baseline"."""
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame({"Export": ["CAR-T registry, exported for crsrisk"]}).to_excel(
            writer, sheet_name="cover", index=False)
        df.to_excel(writer, sheet_name="baseline", index=False)


def build_exports(folder: Path, patients: int = 400, incoming: int = 60) -> None:
    """Write into ``folder`` the site's exports, their contract-form twins and train.yaml.

    site_export.xlsx / site_export.csv: ``patients`` treated patients with their CRS grade.
    incoming.csv: ``incoming`` patients before treatment (the CRS grade column empty), one with
    an entry error (Hb 7 g/L: 0.7 g/dL, implausible). contract_form*.csv: the same rows as the
    contract's own columns, for comparison.
    """
    cohort = contract_form(patients, seed=7)
    new = contract_form(incoming, seed=8, outcome=False)
    new.loc[3, "hemoglobin_g_dl"] = "0.7"  # the site wrote 7 g/L: an entry error
    site = site_export(cohort)
    write_workbook(site, folder / "site_export.xlsx")
    write_semicolon_csv(site, folder / "site_export.csv")
    write_semicolon_csv(site_export(new).assign(**{"CRS grade (ASTCT)": None}),
                        folder / "incoming.csv")
    cohort.to_csv(folder / "contract_form.csv", index=False)
    new.to_csv(folder / "contract_form_incoming.csv", index=False)
    (folder / "train.yaml").write_text(TRAIN_CONFIG, encoding="utf-8")


@dataclass(frozen=True)
class Step:
    """One command of the walk-through and the exit code it should end with."""

    args: tuple[str, ...]
    expected_exit: int
    why: str


STEPS = (
    Step(("suggest-mapping", "site_export.csv", "--out", "mapping.yaml"), 1,
         "exit 1: every required column found; optional ones the export lacks are listed"),
    Step(("validate", "site_export.csv", "--mapping", "mapping.yaml"), 0,
         "exit 0: every row valid"),
    Step(("validate", "site_export.xlsx", "--sheet", "baseline", "--mapping", "mapping.yaml"), 0,
         "the same rows from the workbook's second sheet"),
    Step(("train", "--data", "site_export.xlsx", "--sheet", "baseline", "--mapping",
          "mapping.yaml", "--config", "train.yaml"), 0,
         "registers the first version, which becomes champion"),
    Step(("score", "incoming.csv", "--mapping", "mapping.yaml", "--out", "scores.csv"), 1,
         "exit 1: the implausible Hb is blanked and its patient scored"),
    Step(("score", "incoming.csv", "--mapping", "mapping.yaml", "--out", "scores_strict.csv",
          "--strict"), 1,
         "exit 1: with --strict that patient is rejected instead"),
    Step(("score", "contract_form_incoming.csv", "--out", "scores_contract_form.csv"), 1,
         "the same patients in the contract's form, for comparison"),
)


@dataclass(frozen=True)
class Ran:
    step: Step
    exit_code: int
    output: str


def _environment(folder: Path) -> dict[str, str]:
    """This interpreter's environment with the store in ``folder`` and crsrisk importable."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["CRSRISK_HOME"] = str(folder / "crsrisk-home")
    source = Path(__file__).resolve().parents[1] / "src"
    if source.is_dir():  # a clone: its own crsrisk before an installed one
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source),
                                                          env.get("PYTHONPATH")]))
    return env


def run_walkthrough(folder: Path, patients: int = 400, echo=print) -> list[Ran]:
    """Build the exports in ``folder`` and run every step there, echoing commands and output."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise SystemExit(f"{folder} is not empty: give an empty or new folder.")
    build_exports(folder, patients)
    echo(f"# in {folder}: site_export.xlsx (sheet 'baseline'), site_export.csv, incoming.csv")
    env = _environment(folder)
    ran = []
    for step in STEPS:
        echo(f"\n$ crsrisk {shlex.join(step.args)}")
        done = subprocess.run([sys.executable, "-m", "crsrisk", *step.args], cwd=folder,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, check=False)
        output = done.stdout
        echo(output.rstrip("\n"))
        echo(f"# exit {done.returncode} ({step.why})")
        ran.append(Ran(step, done.returncode, output))
        if step.args[0] == "suggest-mapping":
            echo("\n# review the draft before using it:\n$ cat mapping.yaml")
            echo((folder / "mapping.yaml").read_text(encoding="utf-8").rstrip("\n"))
    site = pd.read_csv(folder / "scores.csv")
    contract = pd.read_csv(folder / "scores_contract_form.csv")
    both = site.merge(contract, on="patient_id", suffixes=("_site", "_contract"))
    difference = np.abs(both["risk_site"] - both["risk_contract"]).max()
    echo(f"\n# {len(site)} incoming patients: largest risk difference between the site export "
         f"(through the unedited mapping) and the contract-form table: {difference:.1e}")
    return ran


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="an empty or new folder")
    parser.add_argument("--patients", type=int, default=400, help="patients to train on")
    args = parser.parse_args(argv)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="crsrisk-walkthrough-"))
    ran = run_walkthrough(folder, args.patients)
    wrong = [r for r in ran if r.exit_code != r.step.expected_exit]
    for r in wrong:
        print(f"unexpected: crsrisk {shlex.join(r.step.args)} exited {r.exit_code}, "
              f"expected {r.step.expected_exit}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
