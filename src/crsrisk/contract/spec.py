"""The data contract, version 1, written down once: every column's type, unit, allowed values,
whether it is required, and what it means.

The pandera schemas, the parsers, the simulator, the model signature, `crsrisk contract` and
docs/contract.md are all generated from these lists.
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
    "BASELINE_SPECS",
    "OUTCOME_NAMES",
    "CAR_T_ONLY",
    "FIRST_INFUSION_DATE",
    "OutputColumn",
    "REJECTED_TABLE",
    "REJECTED_COLUMNS",
    "REJECTED_COLUMNS_DOC",
    "ACTIONS",
    "SCORE_TABLE",
]

CONTRACT_VERSION = "1"

Kind = Literal["str", "category", "float", "int", "bool", "date"]


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a contract table.

    Attributes
    ----------
    name : str
        The column name; snake_case, carrying its unit.
    kind : {"str", "category", "float", "int", "bool", "date"}
    nullable : bool
        Missing values allowed; such a column may also be left out of the file.
    min, max : float, optional
        The plausible range (inclusive) of a number.
    levels : tuple of str
        The allowed values of a category.
    meaning : str
        What the column holds, in words.
    unit : str
        The unit of a number ("" when it has none).
    lab : bool
        A laboratory value: an implausible (out-of-range) value is set to missing and the row is
        still used, the blanking reported; other columns reject the row.
    label : str
        How a clinician names the column in driver texts, the model report and the contract
        ("CRP"); "" for columns that are no clinical finding (``patient_id``, ``site``).
    label_unit : str, optional
        The unit as written beside a value in driver texts and the report, where it differs from
        `unit` ("x10^9/L" for "10^9/L"); None: `unit`.
    """

    name: str
    kind: Kind
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    levels: tuple[str, ...] = ()
    meaning: str = ""
    unit: str = ""
    lab: bool = False
    label: str = ""
    label_unit: str | None = None

    @property
    def display_unit(self) -> str:
        """The unit as driver texts and the report write it beside a value."""
        return self.unit if self.label_unit is None else self.label_unit

    @property
    def heading(self) -> str:
        """Label with unit, as a table heading or axis reads it: "CRP (mg/L)", "Product"."""
        unit = self.display_unit
        return f"{self.label} ({unit})" if unit else self.label

    @property
    def required(self) -> bool:
        """Required columns must be present in the file; the others may be left out."""
        return not self.nullable

    @property
    def allowed(self) -> str:
        """The allowed values in words."""
        if self.levels:
            return ", ".join(self.levels)
        if self.min is not None and self.max is not None:
            return f"{self.min:g} .. {self.max:g}"
        if self.kind == "bool":
            return "true/false (also yes/no, 1/0)"
        if self.kind == "date":
            return f"{FIRST_INFUSION_DATE} .. today (YYYY-MM-DD)"
        if self.kind == "str":
            return "non-empty text"
        return ""


def _lab(name: str, low: float, high: float, unit: str, meaning: str, label: str,
         label_unit: str | None = None) -> ColumnSpec:
    return ColumnSpec(name, "float", min=low, max=high, unit=unit, meaning=meaning, lab=True,
                      label=label, label_unit=label_unit)


BASELINE_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("patient_id", "str", nullable=False,
               meaning="pseudonymous episode id, unique in the table; never a name or record "
               "number"),
    ColumnSpec("site", "str", meaning="treating centre"),
    ColumnSpec("infusion_date", "date", nullable=False,
               meaning="day 0: the CAR-T infusion or the first bispecific step-up dose"),
    ColumnSpec("age_years", "float", nullable=False, min=0, max=110, unit="years",
               meaning="age at infusion", label="Age"),
    ColumnSpec("sex", "category", levels=SEXES, meaning="F female, M male",
               label="Sex"),
    ColumnSpec("weight_kg", "float", min=2, max=300, unit="kg", meaning="body weight",
               label="Weight"),
    ColumnSpec("ecog", "int", min=0, max=4, meaning="ECOG performance status",
               label="ECOG"),
    ColumnSpec("diagnosis", "category", nullable=False, levels=DIAGNOSES,
               meaning="LBCL large B-cell lymphoma, FL follicular lymphoma, MCL mantle cell "
               "lymphoma, B-ALL B-cell acute lymphoblastic leukaemia, CLL chronic lymphocytic "
               "leukaemia, MM multiple myeloma, SCLC small-cell lung cancer",
               label="Diagnosis"),
    ColumnSpec("therapy_class", "category", nullable=False, levels=THERAPY_CLASSES,
               meaning="CAR-T cells or a bispecific T-cell engager", label="Therapy"),
    ColumnSpec("product", "category", nullable=False, levels=tuple(PRODUCTS),
               meaning="generic product name (see the product table); must belong to "
               "therapy_class", label="Product"),
    ColumnSpec("costim_domain", "category", levels=COSTIM_DOMAINS,
               meaning="CAR costimulatory domain; CAR-T only, filled from the product table "
               "when missing; must be empty for bispecifics", label="Costimulation"),
    ColumnSpec("cell_dose_1e6_per_kg", "float", min=0, max=1000, unit="10^6 cells/kg",
               meaning="infused CAR-T cells per kg body weight; CAR-T only",
               label="Cell dose", label_unit="x10^6/kg"),
    ColumnSpec("lymphodepletion", "category", levels=LYMPHODEPLETION,
               meaning="lymphodepleting chemotherapy (flu_cy fludarabine + cyclophosphamide)",
               label="Lymphodepletion"),
    ColumnSpec("prior_lines", "int", min=0, max=25, meaning="prior lines of therapy",
               label="Prior lines"),
    ColumnSpec("bridging_therapy", "bool", meaning="bridging therapy before infusion",
               label="Bridging therapy"),
    _lab("ldh_u_l", 20, 50000, "U/L", "lactate dehydrogenase", "LDH"),
    ColumnSpec("spd_cm2", "float", min=0, max=2000, unit="cm^2",
               meaning="sum of the products of diameters (lymphoma burden)", label="SPD",
               label_unit="cm2"),
    ColumnSpec("marrow_blasts_pct", "float", min=0, max=100, unit="%",
               meaning="bone marrow blasts (ALL burden)", label="Marrow blasts"),
    ColumnSpec("marrow_plasma_cells_pct", "float", min=0, max=100, unit="%",
               meaning="bone marrow plasma cells (myeloma burden)",
               label="Marrow plasma cells"),
    ColumnSpec("bulky_disease", "bool", meaning="bulky disease", label="Bulky disease"),
    _lab("crp_mg_l", 0, 1000, "mg/L", "C-reactive protein (mg/dL x 10 = mg/L)", "CRP"),
    _lab("ferritin_ng_ml", 0, 200000, "ng/mL", "ferritin (ng/mL = ug/L)", "Ferritin"),
    _lab("platelets_1e9_l", 0, 3000, "10^9/L", "platelet count (10^9/L = 10^3/uL)", "Platelets",
         "x10^9/L"),
    _lab("anc_1e9_l", 0, 200, "10^9/L", "absolute neutrophil count", "ANC", "x10^9/L"),
    _lab("hemoglobin_g_dl", 1, 25, "g/dL", "haemoglobin (g/L / 10 = g/dL)", "Haemoglobin"),
    _lab("creatinine_mg_dl", 0.05, 30, "mg/dL", "serum creatinine (umol/L / 88.4 = mg/dL)",
         "Creatinine"),
    _lab("il6_pg_ml", 0, 1e6, "pg/mL", "interleukin-6 at baseline", "IL-6"),
    ColumnSpec("prior_autoimmune_disease", "bool", meaning="history of autoimmune disease",
               label="Prior autoimmune disease"),
    ColumnSpec("hlh_history", "bool",
               meaning="HLH, or a genetic condition that predisposes to it",
               label="HLH history"),
)

# Outcome columns: required for training and evaluation, optional (and ignored) for scoring.
OUTCOME_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("crs_max_grade", "int", min=0, max=5, meaning="worst CRS grade in the episode"),
    ColumnSpec("crs_grading_scale", "category", levels=GRADING_SCALES,
               meaning="the scale crs_max_grade was given on; other scales than ASTCT are "
               "regraded from the event table or refused for training"),
)

EVENT_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("patient_id", "str", nullable=False, meaning="matches the baseline table"),
    ColumnSpec("fever", "bool", nullable=False,
               meaning="temperature >= 38.0 C not attributable to another cause (or masked by "
               "antipyretics or anti-cytokine therapy)"),
    ColumnSpec("hypotension", "category", nullable=False, levels=HYPOTENSION_LEVELS,
               meaning="worst hypotension and its treatment"),
    ColumnSpec("hypoxia", "category", nullable=False, levels=HYPOXIA_LEVELS,
               meaning="worst oxygen support: low_flow <= 6 L/min, high_flow > 6 L/min, "
               "positive_pressure CPAP, BiPAP or intubation"),
    ColumnSpec("crs_death", "bool", nullable=False, meaning="death attributed to CRS"),
)

BASELINE_NAMES: tuple[str, ...] = tuple(c.name for c in BASELINE_COLUMNS)
BASELINE_SPECS: dict[str, ColumnSpec] = {c.name: c for c in BASELINE_COLUMNS}
OUTCOME_NAMES: tuple[str, ...] = tuple(c.name for c in OUTCOME_COLUMNS)
CAR_T_ONLY = ("costim_domain", "cell_dose_1e6_per_kg")
FIRST_INFUSION_DATE = "2009-01-01"


@dataclass(frozen=True)
class OutputColumn:
    """A column of a table the pipeline writes."""

    name: str
    meaning: str


ACTIONS = ("rejected", "blanked")

# The rejected table (output of validation and scoring): every input row is scored or in it.
REJECTED_TABLE: tuple[OutputColumn, ...] = (
    OutputColumn("row_number", "1-based data row of the input file (the header not counted)"),
    OutputColumn("patient_id", "as given, where readable"),
    OutputColumn("column", "the contract column concerned"),
    OutputColumn("check", "the rule broken, in words"),
    OutputColumn("value", "the offending value in the contract's unit, as far as it was read"),
    OutputColumn("action", "rejected: the row was not used; blanked: an implausible laboratory "
                 "value was set to missing and the row was used (--strict rejects it instead)"),
    OutputColumn("source_column", "the input file's own column that held the value"),
    OutputColumn("source_value", "the value as the input file wrote it, with the unit the "
                 "mapping gave it"),
)
REJECTED_COLUMNS: tuple[str, ...] = tuple(c.name for c in REJECTED_TABLE)
REJECTED_COLUMNS_DOC = REJECTED_COLUMNS  # the former name, kept for existing imports

SCORE_TABLE: tuple[OutputColumn, ...] = (
    OutputColumn("patient_id", "as given"),
    OutputColumn("risk", "calibrated probability of ASTCT grade >= 3 CRS, 0 .. 1"),
    OutputColumn("risk_tier", "low, intermediate, high (thresholds from the model's config)"),
    OutputColumn("top_drivers", "the features that pushed this patient's risk most, with "
                 "direction and size (SHAP)"),
    OutputColumn("planning", "the planning actions configured for the tier"),
    OutputColumn("model_name, model_version", "the registered model that scored the row"),
)
