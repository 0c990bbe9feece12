"""What sites call the contract's columns, codes and units: the tables behind
`crsrisk suggest-mapping`. Names are compared lower-case with every run of non-letters and
non-digits read as one underscore."""

from __future__ import annotations

from crsrisk.contract.products import PRODUCTS

__all__ = ["COLUMN_SYNONYMS", "VALUE_SYNONYMS", "HEADER_UNITS", "PRODUCT_NAMES"]

COLUMN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "patient_id": ("patient", "patient_id", "pid", "id", "subject", "subject_id", "pseudonym",
                   "mrn", "mrn_pseudo", "case_id", "episode_id", "studien_id", "usubjid"),
    "site": ("site", "centre", "center", "hospital", "institution", "zentrum", "klinik"),
    "infusion_date": ("infusion_date", "date_of_infusion", "infusion", "day_0", "d0", "date",
                      "treatment_date", "cart_date", "car_t_date", "start_date",
                      "infusionsdatum", "datum"),
    "age_years": ("age", "age_years", "age_at_infusion", "alter", "age_y"),
    "sex": ("sex", "gender", "geschlecht"),
    "weight_kg": ("weight", "weight_kg", "body_weight", "bw", "gewicht", "kg"),
    "ecog": ("ecog", "ecog_ps", "performance_status", "ps"),
    "diagnosis": ("diagnosis", "disease", "dx", "entity", "histology", "diagnose",
                  "indication"),
    "therapy_class": ("therapy_class", "therapy", "treatment_class", "class", "modality"),
    "product": ("product", "drug", "car_t_product", "agent", "construct", "produkt",
                "medication"),
    "costim_domain": ("costim", "costim_domain", "costimulatory_domain", "costimulation"),
    "cell_dose_1e6_per_kg": ("cell_dose", "dose", "car_t_dose", "cell_dose_per_kg",
                             "cells_per_kg", "infused_cells", "zelldosis", "dose_per_kg"),
    "lymphodepletion": ("lymphodepletion", "ld", "ld_regimen", "conditioning",
                        "lymphodepleting_chemotherapy"),
    "prior_lines": ("prior_lines", "prior_therapies", "lines", "previous_lines",
                    "number_of_prior_lines", "vorlinien"),
    "bridging_therapy": ("bridging", "bridging_therapy", "bridge"),
    "ldh_u_l": ("ldh", "lactate_dehydrogenase", "ld_u_l"),
    "spd_cm2": ("spd", "sum_of_product_diameters", "tumour_burden", "tumor_burden"),
    "marrow_blasts_pct": ("blasts", "bm_blasts", "marrow_blasts", "bone_marrow_blasts",
                          "blast_percentage", "blasten"),
    "marrow_plasma_cells_pct": ("plasma_cells", "bm_plasma_cells", "marrow_plasma_cells",
                                "bmpc"),
    "bulky_disease": ("bulky", "bulky_disease"),
    "crp_mg_l": ("crp", "c_reactive_protein", "creactive_protein"),
    "ferritin_ng_ml": ("ferritin", "ferritin_ng_ml"),
    "platelets_1e9_l": ("platelets", "plt", "platelet_count", "thrombocytes", "thrombozyten",
                        "thrombo"),
    "anc_1e9_l": ("anc", "neutrophils", "absolute_neutrophil_count", "neutrophil_count",
                  "neutrophile"),
    "hemoglobin_g_dl": ("hemoglobin", "haemoglobin", "hb", "hgb", "haemoglobin_g_dl",
                        "hamoglobin"),
    "creatinine_mg_dl": ("creatinine", "creat", "crea", "kreatinin", "cr", "scr"),
    "il6_pg_ml": ("il6", "il_6", "interleukin_6", "interleukin6"),
    "prior_autoimmune_disease": ("autoimmune", "autoimmune_disease", "prior_autoimmune",
                                 "autoimmunity"),
    "hlh_history": ("hlh", "hlh_history", "history_of_hlh"),
    "crs_max_grade": ("crs_grade", "crs", "max_crs_grade", "crs_max_grade", "crs_max"),
    "crs_grading_scale": ("crs_scale", "grading_scale", "crs_grading", "scale"),
}

# Contract column -> {site value (lower case): contract value}.
_YES_NO = {"ja": "true", "nein": "false", "j": "true", "oui": "true", "non": "false",
           "si": "true", "present": "true", "absent": "false", "positive": "true",
           "negative": "false"}
PRODUCT_NAMES: dict[str, str] = {
    **{brand.lower(): name for name, p in PRODUCTS.items() for brand in p.brands},
    "axicabtagene ciloleucel": "axi-cel", "brexucabtagene autoleucel": "brexu-cel",
    "tisagenlecleucel": "tisa-cel", "lisocabtagene maraleucel": "liso-cel",
    "obecabtagene autoleucel": "obe-cel", "idecabtagene vicleucel": "ide-cel",
    "ciltacabtagene autoleucel": "cilta-cel", "axicel": "axi-cel", "tisacel": "tisa-cel",
    "lisocel": "liso-cel", "brexucel": "brexu-cel", "idecel": "ide-cel",
    "ciltacel": "cilta-cel", "obecel": "obe-cel",
}
VALUE_SYNONYMS: dict[str, dict[str, str]] = {
    "sex": {"female": "F", "woman": "F", "w": "F", "weiblich": "F", "f": "F", "male": "M",
            "man": "M", "m": "M", "mannlich": "M", "männlich": "M", "2": "F", "1": "M"},
    "diagnosis": {
        "diffuse large b-cell lymphoma": "LBCL", "dlbcl": "LBCL",
        "large b-cell lymphoma": "LBCL", "pmbcl": "LBCL", "hgbcl": "LBCL",
        "follicular lymphoma": "FL", "mantle cell lymphoma": "MCL",
        "b-cell acute lymphoblastic leukemia": "B-ALL",
        "b-cell acute lymphoblastic leukaemia": "B-ALL",
        "acute lymphoblastic leukemia": "B-ALL", "acute lymphoblastic leukaemia": "B-ALL",
        "all": "B-ALL", "b all": "B-ALL", "ball": "B-ALL",
        "chronic lymphocytic leukemia": "CLL", "chronic lymphocytic leukaemia": "CLL",
        "multiple myeloma": "MM", "myeloma": "MM", "small cell lung cancer": "SCLC",
        "small-cell lung cancer": "SCLC",
    },
    "therapy_class": {"car t": "CAR-T", "cart": "CAR-T", "car-t cells": "CAR-T",
                      "bispecific antibody": "bispecific", "bsab": "bispecific",
                      "tce": "bispecific", "bite": "bispecific"},
    "product": PRODUCT_NAMES,
    "lymphodepletion": {"flu/cy": "flu_cy", "flucy": "flu_cy", "flu-cy": "flu_cy",
                        "fludarabine/cyclophosphamide": "flu_cy", "benda": "bendamustine",
                        "bendamustin": "bendamustine", "no": "none", "keine": "none"},
    **{c: _YES_NO for c in ("bridging_therapy", "bulky_disease", "prior_autoimmune_disease",
                            "hlh_history")},
}

# (contract column, pattern on the lower-case header) -> the mapping's unit.
HEADER_UNITS: tuple[tuple[str, str, str], ...] = (
    ("crp_mg_l", r"mg\s*/?\s*dl|mg_dl", "mg/dL"),
    ("crp_mg_l", r"mg\s*/?\s*l\b|mg_l\b", "mg/L"),
    ("hemoglobin_g_dl", r"g\s*/?\s*dl|g_dl", "g/dL"),
    ("hemoglobin_g_dl", r"mmol", "mmol/L"),
    ("hemoglobin_g_dl", r"g\s*/?\s*l\b|g_l\b", "g/L"),
    ("creatinine_mg_dl", r"[uµμ]mol|umol", "umol/L"),
    ("creatinine_mg_dl", r"mg\s*/?\s*dl|mg_dl", "mg/dL"),
    ("platelets_1e9_l", r"(x\s*)?10\^?3|10e3|1e3|g/l\b|10\^?9|1e9|/nl", "1e3_per_uL"),
    ("platelets_1e9_l", r"/\s*[uµμ]l|per_ul|_ul\b", "per_uL"),
    ("anc_1e9_l", r"(x\s*)?10\^?3|10e3|1e3|10\^?9|1e9|/nl", "1e3_per_uL"),
    ("anc_1e9_l", r"/\s*[uµμ]l|per_ul|_ul\b", "per_uL"),
    ("ferritin_ng_ml", r"[uµμ]g\s*/?\s*l", "ug/L"),
    ("weight_kg", r"\blb|pound", "lb"),
    ("marrow_blasts_pct", r"fraction|frac\b|_frac|ratio", "fraction"),
    ("marrow_blasts_pct", r"%|pct|percent|prozent", "%"),
    ("marrow_plasma_cells_pct", r"fraction|frac\b|_frac|ratio", "fraction"),
    ("marrow_plasma_cells_pct", r"%|pct|percent|prozent", "%"),
    ("cell_dose_1e6_per_kg", r"total.*1e8|1e8.*total", "total_1e8_cells"),
    ("cell_dose_1e6_per_kg", r"total.*1e6|1e6.*total|total.*10\^?6", "total_1e6_cells"),
    ("cell_dose_1e6_per_kg", r"10\^?6|1e6|million", "1e6_per_kg"),
    ("cell_dose_1e6_per_kg", r"cells\s*/\s*kg|cells_per_kg|cells_kg", "cells_per_kg"),
)
