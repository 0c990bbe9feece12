"""Column specifications of the data contract, version 1 (shared/data-contract.md).

One `ColumnSpec` per column; the pandera schemas, the parsers, the simulator and the model
signature are all generated from these lists, so the contract is written down once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crsrisk.contract.products import (
    COSTIM_DOMAINS,
    DIAGNOSES,
    GRADING_SCALES,
    HYPOTENSION_LEVELS,
    HYPOXIA_LEVELS,
    LYMPHODEPLETION,
    PRODUCTS,
    SEXES,
    THERAPY_CLASSES,
)

__all__ = [
    "CONTRACT_VERSION",
    "Kind",
    "ColumnSpec",
    "BASELINE_COLUMNS",
    "OUTCOME_COLUMNS",
    "EVENT_COLUMNS",
    "BASELINE_NAMES",
    "OUTCOME_NAMES",
    "CAR_T_ONLY",
    "FIRST_INFUSION_DATE",
    "REJECTED_COLUMNS_DOC",
]

CONTRACT_VERSION = "1"

Kind = Literal["str", "category", "float", "int", "bool", "date"]


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: Kind
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    levels: tuple[str, ...] = ()
    meaning: str = ""

    @property
    def required(self) -> bool:
        """Required columns must be present in the file; the others may be left out."""
        return not self.nullable


BASELINE_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("patient_id", "str", nullable=False, meaning="pseudonymous episode id"),
    ColumnSpec("site", "str", meaning="treating centre"),
    ColumnSpec("infusion_date", "date", nullable=False, meaning="day 0"),
    ColumnSpec("age_years", "float", nullable=False, min=0, max=110),
    ColumnSpec("sex", "category", levels=SEXES),
    ColumnSpec("weight_kg", "float", min=2, max=300),
    ColumnSpec("ecog", "int", min=0, max=4, meaning="performance status"),
    ColumnSpec("diagnosis", "category", nullable=False, levels=DIAGNOSES),
    ColumnSpec("therapy_class", "category", nullable=False, levels=THERAPY_CLASSES),
    ColumnSpec("product", "category", nullable=False, levels=tuple(PRODUCTS)),
    ColumnSpec("costim_domain", "category", levels=COSTIM_DOMAINS),
    ColumnSpec("cell_dose_1e6_per_kg", "float", min=0, max=1000),
    ColumnSpec("lymphodepletion", "category", levels=LYMPHODEPLETION),
    ColumnSpec("prior_lines", "int", min=0, max=25),
    ColumnSpec("bridging_therapy", "bool"),
    ColumnSpec("ldh_u_l", "float", min=20, max=50000, meaning="lactate dehydrogenase"),
    ColumnSpec("spd_cm2", "float", min=0, max=2000, meaning="lymphoma burden"),
    ColumnSpec("marrow_blasts_pct", "float", min=0, max=100, meaning="ALL burden"),
    ColumnSpec("marrow_plasma_cells_pct", "float", min=0, max=100, meaning="myeloma burden"),
    ColumnSpec("bulky_disease", "bool"),
    ColumnSpec("crp_mg_l", "float", min=0, max=1000, meaning="C-reactive protein, mg/L"),
    ColumnSpec("ferritin_ng_ml", "float", min=0, max=200000),
    ColumnSpec("platelets_1e9_l", "float", min=0, max=3000),
    ColumnSpec("anc_1e9_l", "float", min=0, max=200, meaning="absolute neutrophil count"),
    ColumnSpec("hemoglobin_g_dl", "float", min=1, max=25),
    ColumnSpec("creatinine_mg_dl", "float", min=0.05, max=30),
    ColumnSpec("il6_pg_ml", "float", min=0, max=1e6),
    ColumnSpec("prior_autoimmune_disease", "bool"),
    ColumnSpec("hlh_history", "bool"),
)

# Outcome columns: required for training and evaluation, optional (and ignored) for scoring.
OUTCOME_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("crs_max_grade", "int", min=0, max=5, meaning="worst CRS grade in the episode"),
    ColumnSpec("crs_grading_scale", "category", levels=GRADING_SCALES),
)

EVENT_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("patient_id", "str", nullable=False),
    ColumnSpec("fever", "bool", nullable=False),
    ColumnSpec("hypotension", "category", nullable=False, levels=HYPOTENSION_LEVELS),
    ColumnSpec("hypoxia", "category", nullable=False, levels=HYPOXIA_LEVELS),
    ColumnSpec("crs_death", "bool", nullable=False),
)

BASELINE_NAMES: tuple[str, ...] = tuple(c.name for c in BASELINE_COLUMNS)
OUTCOME_NAMES: tuple[str, ...] = tuple(c.name for c in OUTCOME_COLUMNS)
CAR_T_ONLY = ("costim_domain", "cell_dose_1e6_per_kg")
FIRST_INFUSION_DATE = "2009-01-01"

# The rejected table of contract section 6.
REJECTED_COLUMNS_DOC = ("row_number", "patient_id", "column", "check", "value")
