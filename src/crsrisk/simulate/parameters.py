"""Parameters of the cohort simulator, each with its source.

Conventions: ``lit:`` names the published trial or study a figure comes from (a quoted phrase
summarises that published finding); ``(unverified)`` marks a figure recalled rather than read
from the paper; ``assumption`` marks a choice of ours. The numbers are plausible, not
estimates: the cohort is for testing and benchmarking the pipeline, never for clinical
conclusions.
"""

from __future__ import annotations

import numpy as np

from crsrisk.contract.products import HYPOTENSION_LEVELS, HYPOXIA_LEVELS

__all__ = [
    "ANC_MEDIAN_LOGSD",
    "ANY_CRS_TARGET",
    "APPROVAL_YEAR",
    "BETA",
    "BLASTS_MEDIAN_LOGSD",
    "BULKY_THRESHOLD",
    "BURDEN_LOADING",
    "BURDEN_MULTIPLIER",
    "CREATININE_MEDIAN_LOGSD",
    "DIAGNOSIS_MIX",
    "DX_OFFSET",
    "ECOG_CUTS",
    "GRADE2_SHARE",
    "HB_MEAN_SD",
    "HYPOTENSION",
    "HYPOXIA",
    "IL6_MEDIAN_LOGSD",
    "LAB_MEDIAN_LOGSD",
    "LD_BISPECIFIC",
    "LD_CAR_T",
    "LD_TISA_CEL",
    "LEE_FROM_HYPOTENSION",
    "LEE_FROM_HYPOXIA",
    "LOADINGS",
    "LYMPHOMAS",
    "MARROW_DISEASES",
    "AGE_MEAN",
    "PENN_FROM_HYPOTENSION",
    "PENN_FROM_HYPOXIA",
    "PLASMA_CELLS_MEDIAN_LOGSD",
    "PREVALENCE",
    "PRODUCT_MIX",
    "RHO_BURDEN_INFLAMMATION",
    "SEVERE_GRADE_SPLIT",
    "SEVERE_TARGET",
    "SPD_MEDIAN_LOGSD",
]


# Share of episodes per product: CAR-T 60 %, bispecifics 40 % (assumption: rough real-world
# volumes at academic centres in the late 2010s-2020s).
PRODUCT_MIX: dict[str, float] = {
    "axi-cel": 0.17,
    "tisa-cel": 0.08,
    "liso-cel": 0.08,
    "brexu-cel": 0.06,
    "ide-cel": 0.06,
    "cilta-cel": 0.08,
    "obe-cel": 0.03,
    "other_car_t": 0.04,  # assumption: "a few %" of rows, trial or academic constructs
    "blinatumomab": 0.07,
    "teclistamab": 0.07,
    "talquetamab": 0.04,
    "elranatamab": 0.04,
    "glofitamab": 0.05,
    "epcoritamab": 0.05,
    "mosunetuzumab": 0.03,
    "tarlatamab": 0.03,
    "other_bispecific": 0.02,  # assumption: "a few %"
}

# Diagnosis given product, within the contract's usual diagnoses (products.py); proportions are
# assumptions guided by the pivotal trials named in lit: "Severe CRS ... pivotal trials".
DIAGNOSIS_MIX: dict[str, dict[str, float]] = {
    "axi-cel": {"LBCL": 0.9, "FL": 0.1},
    "brexu-cel": {"MCL": 0.6, "B-ALL": 0.4},
    "tisa-cel": {"LBCL": 0.6, "B-ALL": 0.3, "FL": 0.1},
    "liso-cel": {"LBCL": 0.75, "CLL": 0.1, "FL": 0.08, "MCL": 0.07},
    "obe-cel": {"B-ALL": 1.0},
    "ide-cel": {"MM": 1.0},
    "cilta-cel": {"MM": 1.0},
    "other_car_t": {"LBCL": 0.3, "B-ALL": 0.25, "MM": 0.2, "CLL": 0.1, "MCL": 0.05, "other": 0.1},
    "blinatumomab": {"B-ALL": 1.0},
    "teclistamab": {"MM": 1.0},
    "talquetamab": {"MM": 1.0},
    "elranatamab": {"MM": 1.0},
    "glofitamab": {"LBCL": 1.0},
    "epcoritamab": {"LBCL": 0.8, "FL": 0.2},
    "mosunetuzumab": {"FL": 1.0},
    "tarlatamab": {"SCLC": 1.0},
    "other_bispecific": {"MM": 0.35, "LBCL": 0.25, "FL": 0.1, "B-ALL": 0.1, "other": 0.2},
}

# First year of use (approximate US approval years, as given in the brief; assumption for the
# exact day, taken as 1 January). None: any date (blinatumomab approved 2014; "other" products
# stand for trials and academic constructs).
APPROVAL_YEAR: dict[str, int | None] = {
    "axi-cel": 2017,
    "tisa-cel": 2017,
    "brexu-cel": 2020,
    "liso-cel": 2021,
    "ide-cel": 2021,
    "cilta-cel": 2022,
    "obe-cel": 2024,
    "other_car_t": None,
    "blinatumomab": None,
    "teclistamab": 2022,
    "mosunetuzumab": 2022,
    "talquetamab": 2023,
    "elranatamab": 2023,
    "glofitamab": 2023,
    "epcoritamab": 2023,
    "tarlatamab": 2024,
    "other_bispecific": None,
}

# Target rate of ASTCT grade >= 3 per product. Reading of the trial figures on the ASTCT scale
# (assumption): ASTCT figures as published; Lee 2014 / modified Lee / CTCAE v4 figures used as
# ASTCT unchanged (the only published contrast, one CD22 cohort with 8.5 % Lee vs 20.3 % ASTCT,
# is too thin to generalise); Penn figures halved, since Penn grades any oxygen as 3 where ASTCT
# grades low-flow oxygen as 2 (lit: "The scales disagree: Penn inflates grade >= 3"). Products
# used in several diagnoses get the DIAGNOSIS_MIX-weighted mean of their trial figures.
SEVERE_TARGET: dict[str, float] = {
    "axi-cel": 0.13,  # lit: axi-cel (ZUMA-1, LBCL), Lee 2014, 13 % (unverified)
    # lit: brexu-cel ZUMA-2 (MCL) 15 % and ZUMA-3 (B-ALL) 24 % (unverified): 0.6*15 + 0.4*24
    "brexu-cel": 0.186,
    # lit: tisa-cel JULIET 22 % and ELIANA 46 % (Penn, unverified), halved: 0.7*11 + 0.3*23
    "tisa-cel": 0.146,
    # lit: liso-cel TRANSCEND LBCL 2 % and CLL 9 %: 0.9*2 + 0.1*9
    "liso-cel": 0.027,
    "obe-cel": 0.024,  # lit: obe-cel (FELIX, B-ALL), ASTCT, 2.4 %
    "ide-cel": 0.07,  # lit: ide-cel (KarMMa, MM), Lee 2014, 5-9 %: midpoint
    "cilta-cel": 0.04,  # lit: cilta-cel (CARTITUDE-1, MM), ASTCT, 4 %
    "other_car_t": 0.10,  # assumption: between the CD28 and 4-1BB products
    "blinatumomab": 0.049,  # lit: blinatumomab (TOWER, B-ALL), CTCAE v4, 4.9 %
    "teclistamab": 0.006,  # lit: teclistamab (MajesTEC-1, MM), ASTCT, 0.6 %
    "talquetamab": 0.025,  # lit: talquetamab (MonumenTAL-1), ~2-3 % (unverified): midpoint
    "elranatamab": 0.005,  # lit: elranatamab (MagnetisMM-3) 0 % (unverified); assumption 0.5 %
    "glofitamab": 0.04,  # lit: glofitamab (LBCL), ASTCT, 4 %
    "epcoritamab": 0.025,  # lit: epcoritamab (EPCORE NHL-1, LBCL), ASTCT, 2.5 %
    "mosunetuzumab": 0.02,  # lit: mosunetuzumab (FL), ASTCT, 2 % (unverified)
    "tarlatamab": 0.035,  # lit: tarlatamab (DeLLphi-301, SCLC), 1-6 % (unverified): midpoint
    "other_bispecific": 0.03,  # assumption: typical of the bispecifics above
}

# Rate of any CRS (grade >= 1) per product; the scales agree on presence of CRS in 99 % of
# patients (lit: "agreed on the presence of CRS in 99%"), so trial figures are used as is.
ANY_CRS_TARGET: dict[str, float] = {
    "axi-cel": 0.93,  # lit: ZUMA-1 93 %
    "brexu-cel": 0.90,  # lit: ZUMA-2 91 %, ZUMA-3 89 %
    "tisa-cel": 0.64,  # lit: JULIET 58 %, ELIANA 77 %: 0.7*58 + 0.3*77
    "liso-cel": 0.46,  # lit: TRANSCEND LBCL 42 %, CLL 85 %: 0.9*42 + 0.1*85
    "obe-cel": 0.69,  # lit: FELIX ~69 %
    "ide-cel": 0.84,  # lit: KarMMa 84 %
    "cilta-cel": 0.95,  # lit: CARTITUDE-1 95 %
    "other_car_t": 0.75,  # assumption
    "blinatumomab": 0.14,  # lit: TOWER 14 %
    "teclistamab": 0.72,  # lit: MajesTEC-1 72 %
    "talquetamab": 0.78,  # lit: MonumenTAL-1 ~78 %
    "elranatamab": 0.58,  # lit: MagnetisMM-3 58 %
    "glofitamab": 0.63,  # lit: glofitamab 63 %
    "epcoritamab": 0.50,  # lit: EPCORE NHL-1 50 %
    "mosunetuzumab": 0.44,  # lit: mosunetuzumab 44 %
    "tarlatamab": 0.56,  # lit: DeLLphi-301 51-61 %: midpoint
    "other_bispecific": 0.55,  # assumption
}

# Within a product, log-odds offset of each diagnosis relative to LBCL; it only matters for
# products used in several diagnoses (the product intercept absorbs the rest).
DX_OFFSET: dict[str, float] = {
    "LBCL": 0.0,
    "FL": -0.4,  # assumption: indolent disease, lower burden
    "MCL": 0.15,  # lit: ZUMA-2 (MCL) 15 % vs ZUMA-1 (LBCL) 13 %, both CD28
    "B-ALL": 0.8,  # lit: ELIANA 46 % vs JULIET 22 %; ZUMA-3 24 % vs ZUMA-2 15 %
    "CLL": 1.5,  # lit: TRANSCEND CLL 9 % vs LBCL 2 %
    "MM": 0.0,
    "SCLC": 0.0,
    "other": 0.0,
}

# Correlation of the latent burden and inflammation factors (assumption).
RHO_BURDEN_INFLAMMATION = 0.5

# Baseline labs per diagnosis: (median, sd of the natural log). LBCL values from lit: "Typical
# pre-lymphodepletion values in LBCL" (CRP 10-30, ferritin 500-1000, LDH above normal in 50-65 %,
# platelets 130-180; unverified); B-ALL values from lit: "Public B-ALL cohort (n = 202, day 0)",
# log-sd from its IQRs (IQR / 1.35); other diagnoses are assumptions.
LAB_MEDIAN_LOGSD: dict[str, dict[str, tuple[float, float]]] = {
    # LDH median 280 with log-sd 0.55 puts 58 % above an upper normal limit of 250 U/L.
    "LBCL": {"crp": (18, 1.1), "ferritin": (700, 0.9), "ldh": (280, 0.55), "plt": (150, 0.5)},
    "B-ALL": {"crp": (5.7, 0.98), "ferritin": (456, 0.84), "ldh": (163, 0.3), "plt": (84, 1.25)},
    "FL": {"crp": (8, 1.0), "ferritin": (350, 0.9), "ldh": (230, 0.45), "plt": (170, 0.45)},
    "MCL": {"crp": (12, 1.0), "ferritin": (450, 0.9), "ldh": (260, 0.5), "plt": (140, 0.55)},
    "CLL": {"crp": (6, 1.0), "ferritin": (300, 0.9), "ldh": (220, 0.4), "plt": (110, 0.6)},
    "MM": {"crp": (4, 1.1), "ferritin": (400, 1.0), "ldh": (190, 0.35), "plt": (140, 0.55)},
    "SCLC": {"crp": (15, 1.1), "ferritin": (350, 0.9), "ldh": (280, 0.6), "plt": (260, 0.4)},
    "other": {"crp": (10, 1.1), "ferritin": (450, 1.0), "ldh": (230, 0.5), "plt": (160, 0.55)},
}
# Labs common to all diagnoses (assumptions): haemoglobin normal (mean, sd) in g/dL by
# diagnosis, ANC, creatinine and IL-6 log-normal (median, log-sd).
HB_MEAN_SD: dict[str, tuple[float, float]] = {
    "LBCL": (10.8, 1.6), "B-ALL": (9.8, 1.6), "FL": (11.8, 1.5), "MCL": (11.2, 1.6),
    "CLL": (11.0, 1.6), "MM": (10.2, 1.5), "SCLC": (11.5, 1.5), "other": (11.0, 1.6),
}  # fmt: skip
ANC_MEDIAN_LOGSD = (2.6, 0.7)
CREATININE_MEDIAN_LOGSD = (0.85, 0.3)
IL6_MEDIAN_LOGSD = (8.0, 1.0)

# Loadings (burden, inflammation) of each standardised log lab on the latent factors
# (assumption): inflammation drives CRP, ferritin, IL-6 and LDH up, platelets and haemoglobin
# down; burden drives LDH up and, where the marrow is involved, platelets down.
LOADINGS: dict[str, tuple[float, float]] = {
    "ldh": (0.5, 0.35),
    "crp": (0.15, 0.75),
    "ferritin": (0.1, 0.6),
    "il6": (0.1, 0.65),
    "plt": (-0.15, -0.35),
    "plt_marrow": (-0.45, -0.35),  # B-ALL, CLL, MM: marrow infiltration
    "hb": (-0.2, -0.35),
    "anc": (0.0, -0.1),
}
MARROW_DISEASES = ("B-ALL", "CLL", "MM")
LYMPHOMAS = ("LBCL", "FL", "MCL")

# Burden markers (median, log-sd) per diagnosis (assumptions; lit names the markers: "marrow
# blasts in B-ALL ..., SPD and LDH in lymphoma, marrow plasma cells in myeloma").
SPD_MEDIAN_LOGSD: dict[str, tuple[float, float]] = {
    "LBCL": (35.0, 1.0), "FL": (25.0, 1.0), "MCL": (30.0, 1.0),
}  # fmt: skip
# Median 8 % blasts, log-sd 2: ~59 % of B-ALL patients at >= 5 % blasts, the rest down to MRD.
BLASTS_MEDIAN_LOGSD = (8.0, 2.0)
PLASMA_CELLS_MEDIAN_LOGSD = (20.0, 0.9)
BURDEN_LOADING = 0.85  # correlation of each log burden marker with the latent burden factor
# 75th centile of N(0, 1.25): a quarter of lymphoma patients bulky (assumption).
BULKY_THRESHOLD = 0.6745 * np.sqrt(1.25)

# True log-odds coefficients, per unit of natural log unless stated.
BETA = {
    # lit: "Tumour burden is the strongest baseline factor": blasts >= 5 % vs MRD level gives
    # ~40 % vs ~5 % severe CRS, a log-odds gap of ~2.5 over ~4.4 log units of blasts. The
    # simulated B-ALL (mostly low-rate blinatumomab and obe-cel) keeps the ~8-fold ratio at lower
    # absolute rates, and blasts alone reach an AUROC of ~0.79 (lit: "univariable AUC ~0.78").
    "blasts": 0.55,
    "plasma_cells": 0.5,  # lit: "marrow plasma cells in myeloma"; strength assumption
    "spd": 0.4,  # lit: "SPD and LDH in lymphoma"; strength assumption
    "ldh": 0.6,  # lit: "SPD and LDH in lymphoma"; part of m-EASIX
    # lit: "high CRP and low platelets were the only individually significant parts of m-EASIX
    # (Pennisi 2021)"; strengths tuned so m-EASIX lands near, not above, its published AUROC
    # (lit: "AUC 0.80"): ~0.76 on simulated CAR-T patients.
    "crp": 0.35,
    "plt": -0.4,
    "ferritin": 0.05,  # lit: "CRP and ferritin alone did not predict severe CRS in Teachey 2016"
    "il6": 0.1,  # assumption: weak, correlated with CRP
    "bulky": 0.2,  # assumption: lymphoma burden beyond SPD
    "flu_cy": 0.5,  # lit: "Fludarabine/cyclophosphamide ... independent predictors (Hay 2017)"
    "cell_dose": 0.4,  # lit: "higher cell dose ... independent predictors (Hay 2017)"
    "hlh": 1.5,  # lit: "Pre-existing HLH ... raises risk": rare and strong (strength assumption)
    "autoimmune": 0.1,  # lit: "prior autoimmune disease ... weak evidence"
    "bridging": 0.2,  # assumption: modest, marks refractory disease
    "ecog": 0.1,  # assumption: per point
    "ecog_ge2": 0.3,  # assumption: extra step at ECOG >= 2 (a non-linearity)
    "prior_lines": 0.03,  # assumption: weak
}
# Multiplier of the burden terms per product (1 where absent): the burden marker, LDH and
# platelets (the labs that track marrow burden in myeloma). Inflammation labs keep their effect,
# so plasma cells keep a weak marginal association through them (univariable AUROC ~0.59 for
# teclistamab against ~0.74 for the myeloma CAR-Ts on a million simulated patients).
BURDEN_MULTIPLIER: dict[str, float] = {
    "teclistamab": 0.1,  # lit: "For teclistamab, baseline burden did not predict CRS"
}

# Standard-normal cut points giving ECOG 0 / 1 / 2 / 3 shares of 38 / 50 / 9 / 3 % (assumption:
# trial populations are mostly ECOG 0-1; real-world cohorts include some ECOG >= 2).
ECOG_CUTS = np.array([-0.305, 1.175, 1.881])

PREVALENCE = {
    "hlh": 0.01,  # assumption: rare
    "autoimmune": 0.07,  # assumption
    "male": 0.6,  # assumption: male predominance in lymphoma and myeloma
    "bridging_car_t": 0.55,  # assumption
    "bridging_bispecific": 0.03,  # assumption: no manufacturing wait
}

# Lymphodepletion (flu_cy, bendamustine, other, none) by therapy class (assumptions; lit names
# Flu/Cy as the usual CAR-T regimen). tisa-cel gets bendamustine more often (JULIET allowed it).
LD_CAR_T = (0.93, 0.04, 0.03, 0.0)
LD_TISA_CEL = (0.78, 0.19, 0.03, 0.0)
LD_BISPECIFIC = (0.0, 0.0, 0.03, 0.97)

# ASTCT grade split (assumptions): among severe, grade 3 / 4 / 5 (grade 5 ~3 % of severe);
# among non-severe CRS, the share of grade 2 (lit: "Bispecifics: CRS mostly grade 1-2").
SEVERE_GRADE_SPLIT = (0.77, 0.20, 0.03)
GRADE2_SHARE = {"CAR-T": 0.40, "bispecific": 0.25}
# Ordinal event levels: index 0 none, 1 -> ASTCT 2, 2 -> ASTCT 3, 3 -> ASTCT 4.
HYPOTENSION = np.array(HYPOTENSION_LEVELS, dtype=object)
HYPOXIA = np.array(HYPOXIA_LEVELS, dtype=object)
# Approximate regrading of events on the older scales (assumption, documented for the notes).
# Lee 2014: fluids or one low-dose vasopressor and low oxygen are 2; multiple / high-dose
# vasopressors and high-flow (FiO2 >= 40 %) are 3; ventilation 4. Penn: fluids 2; any oxygen or
# one vasopressor 3; multiple vasopressors or positive pressure 4.
LEE_FROM_HYPOTENSION = np.array([0, 2, 2, 3])
LEE_FROM_HYPOXIA = np.array([0, 2, 3, 4])
PENN_FROM_HYPOTENSION = np.array([0, 2, 3, 4])
PENN_FROM_HYPOXIA = np.array([0, 3, 3, 4])


# --------------------------------------------------------------------------------------------

# Mean age per diagnosis (assumptions, near the trials' medians).
AGE_MEAN = {"LBCL": 62, "FL": 60, "MCL": 66, "B-ALL": 40, "CLL": 65, "MM": 64, "SCLC": 64,
            "other": 58}  # fmt: skip
