"""Shared fixtures: tiny contract tables built inline."""

from __future__ import annotations

import pandas as pd
import pytest

VALID_ROWS = [
    # A CD28 CAR-T with costim left for the product table to fill.
    dict(patient_id="P1", site="A", infusion_date="2021-03-04", age_years="61", sex="F",
         weight_kg="70", ecog="1", diagnosis="LBCL", therapy_class="CAR-T", product="axi-cel",
         costim_domain="", cell_dose_1e6_per_kg="2", lymphodepletion="flu_cy", prior_lines="2",
         bridging_therapy="true", ldh_u_l="310", spd_cm2="40", marrow_blasts_pct="",
         marrow_plasma_cells_pct="", bulky_disease="false", crp_mg_l="25",
         ferritin_ng_ml="800", platelets_1e9_l="150", anc_1e9_l="3.1", hemoglobin_g_dl="11",
         creatinine_mg_dl="0.9", il6_pg_ml="", prior_autoimmune_disease="no",
         hlh_history="no"),
    # A bispecific: no costim, no cell dose.
    dict(patient_id="P2", site="B", infusion_date="2024-01-15", age_years="70", sex="M",
         weight_kg="82", ecog="0", diagnosis="MM", therapy_class="bispecific",
         product="teclistamab", costim_domain="", cell_dose_1e6_per_kg="", lymphodepletion="none",
         prior_lines="5", bridging_therapy="", ldh_u_l="180", spd_cm2="", marrow_blasts_pct="",
         marrow_plasma_cells_pct="30", bulky_disease="", crp_mg_l="4", ferritin_ng_ml="300",
         platelets_1e9_l="190", anc_1e9_l="2.5", hemoglobin_g_dl="10.5",
         creatinine_mg_dl="1.1", il6_pg_ml="6", prior_autoimmune_disease="", hlh_history=""),
    # An other_car_t with its costim given, B-ALL burden.
    dict(patient_id="P3", site="", infusion_date="2019-07-30", age_years="24", sex="",
         weight_kg="", ecog="", diagnosis="B-ALL", therapy_class="CAR-T", product="other_car_t",
         costim_domain="4-1BB", cell_dose_1e6_per_kg="1", lymphodepletion="flu_cy",
         prior_lines="", bridging_therapy="", ldh_u_l="", spd_cm2="", marrow_blasts_pct="40",
         marrow_plasma_cells_pct="", bulky_disease="", crp_mg_l="6", ferritin_ng_ml="",
         platelets_1e9_l="80", anc_1e9_l="", hemoglobin_g_dl="", creatinine_mg_dl="0.7",
         il6_pg_ml="", prior_autoimmune_disease="", hlh_history="yes"),
]


def baseline_frame(n_copies: int = 1, **overrides: list[str]) -> pd.DataFrame:
    """The three valid rows (repeated ``n_copies`` times with unique ids), as text cells."""
    rows = []
    for copy in range(n_copies):
        for row in VALID_ROWS:
            rows.append({**row, "patient_id": f"{row['patient_id']}-{copy}"})
    df = pd.DataFrame(rows, dtype="str")
    for column, values in overrides.items():
        df[column] = pd.Series(values, dtype="str")
    return df


@pytest.fixture
def baseline() -> pd.DataFrame:
    return baseline_frame()
