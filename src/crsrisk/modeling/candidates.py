"""Candidates for small cohorts: a pre-specified tumour-burden model, a pre-specified
parsimonious logistic model and XGBoost whose effects are constrained to the published
directions.

Both carry their clinical knowledge as tables below, each entry with the evidence it rests on,
so that a reviewer can check every choice without reading the fitting code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crsrisk.config import TrainConfig
from crsrisk.features.builder import FeatureBuilder
from crsrisk.features.published import ScoreComparator
from crsrisk.modeling.sample_size import SampleSize, minimum_sample_size

__all__ = [
    "PUBLISHED_SEVERE_RATE",
    "PARSIMONIOUS_FACTORS",
    "BURDEN_FACTORS",
    "MONOTONE_DIRECTIONS",
    "PRODUCT_COLUMN",
    "product_log_odds",
    "supported_parameters",
    "ParsimoniousFeatures",
    "monotone_constraints",
    "PRESPECIFIED",
    "CandidateSize",
    "candidate_parameters",
    "PARAMETERS_COUNTED",
    "check_candidates",
    "searched_config",
]

# Never skipped for sample size: the published scores (one or two parameters: a recalibration),
# the burden model (two parameters) and the parsimonious model (pre-specified factors,
# penalised). They are the floor a small cohort can still fit; where even they exceed the
# cohort, training says so.
PRESPECIFIED = ("m_easix", "easix", "car_hematotox", "burden", "parsimonious")

# Severe CRS (grade >= 3) in each product's pivotal trial, by diagnosis. Trials graded on
# different scales (Penn inflates grade >= 3, Lee 2014 deflates it), so these are priors for the
# product's baseline risk, not targets; the model re-estimates their weight on the cohort.
# Figures marked "recalled" were not re-read from the trial publication.
PUBLISHED_SEVERE_RATE: dict[tuple[str, str], float] = {
    ("axi-cel", "LBCL"): 0.13,  # ZUMA-1 (recalled)
    ("tisa-cel", "LBCL"): 0.22,  # JULIET, Penn scale (recalled)
    ("tisa-cel", "B-ALL"): 0.46,  # ELIANA, paediatric, Penn scale (recalled)
    ("liso-cel", "LBCL"): 0.02,  # TRANSCEND NHL
    ("liso-cel", "CLL"): 0.09,  # TRANSCEND CLL
    ("brexu-cel", "MCL"): 0.15,  # ZUMA-2 (recalled)
    ("brexu-cel", "B-ALL"): 0.24,  # ZUMA-3 (recalled)
    ("ide-cel", "MM"): 0.07,  # KarMMa, 5-9 %
    ("cilta-cel", "MM"): 0.04,  # CARTITUDE-1
    ("obe-cel", "B-ALL"): 0.024,  # FELIX
    ("blinatumomab", "B-ALL"): 0.049,  # TOWER, CTCAE v4
    ("teclistamab", "MM"): 0.006,  # MajesTEC-1
    ("talquetamab", "MM"): 0.025,  # MonumenTAL-1, ~2-3 % (recalled)
    ("elranatamab", "MM"): 0.005,  # MagnetisMM-3 reported 0 %; 0.5 % keeps the log-odds finite
    ("glofitamab", "LBCL"): 0.04,
    ("epcoritamab", "LBCL"): 0.025,  # EPCORE NHL-1
    ("mosunetuzumab", "FL"): 0.02,  # (recalled)
    ("tarlatamab", "SCLC"): 0.035,  # DeLLphi-301, 1-6 % (recalled)
}
PRODUCT_COLUMN = "product"  # the driver reads "Product <name>"; its value is the prior's log-odds

# The parsimonious model's factors, strongest evidence first. Each is a block of design columns
# (see MISSING_INDICATORS). When the cohort
# cannot support every factor (Riley's criteria 1 and 2), the model keeps the leading factors
# that it can support: the order is fixed here, never chosen from the data.
PARSIMONIOUS_FACTORS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("tumour burden", ("tumour_burden",),
     "strongest baseline factor: marrow blasts in B-ALL (~40 % severe CRS with >= 5 % blasts "
     "against ~5 % at MRD level), SPD and LDH in lymphoma, marrow plasma cells in myeloma"),
    ("product", (PRODUCT_COLUMN,),
     "severe CRS rates differ twenty-fold between products in their pivotal trials"),
    ("construct", ("costim=CD28", "therapy_class=bispecific"),
     "CD28 products cause more and earlier CRS than 4-1BB; bispecific CRS is mostly grade 1-2"),
    ("platelets", ("log_platelets",),
     "low platelets before lymphodepletion: independent predictor (Hay 2017), significant part "
     "of m-EASIX (Pennisi 2021)"),
    ("CRP", ("log_crp",), "high CRP: significant part of m-EASIX (Pennisi 2021)"),
    ("LDH", ("log_ldh",), "LDH marks lymphoma burden; part of EASIX and m-EASIX"),
    ("lymphodepletion", ("flu_cy",),
     "fludarabine/cyclophosphamide lymphodepletion: independent predictor (Hay 2017)"),
    ("cell dose", ("log_cell_dose",), "higher CAR-T cell dose: independent predictor (Hay 2017)"),
    ("ferritin", ("log_ferritin",),
     "weak: ferritin alone did not predict severe CRS in Teachey 2016"),
)

# The burden candidate's factors: tumour burden alone, the strongest published baseline factor
# (a site's first question is whether a model beats its own burden measure). Two parameters, a
# slope and a missing-assessment indicator, so that about 100 patients support it.
BURDEN_FACTORS = ("tumour burden",)

# Missing values are imputed at the training median; only burden also gets a missing-value
# indicator (a marrow or imaging assessment not done is itself informative), so that missing labs
# cost no parameters.
MISSING_INDICATORS = ("tumour_burden",)

# Directions XGBoost may learn (+1: risk can only rise with the feature, -1: only fall). Only
# factors with a published direction are constrained; the rest are free. Categoricals (product,
# costimulation) cannot be constrained in XGBoost and stay free.
MONOTONE_DIRECTIONS: dict[str, tuple[int, str]] = {
    "tumour_burden": (1, "tumour burden is the strongest baseline factor, higher is riskier"),
    "marrow_blasts_pct": (1, "B-ALL: >= 5 % blasts ~40 % severe CRS, MRD level ~5 %"),
    "marrow_plasma_cells_pct": (1, "myeloma burden: marrow plasma cells"),
    "log_spd": (1, "lymphoma burden: SPD"),
    "log_ldh": (1, "lymphoma burden: LDH; part of EASIX and m-EASIX"),
    "log_crp": (1, "high CRP: significant in m-EASIX (Pennisi 2021)"),
    "log_platelets": (-1, "low platelets: Hay 2017 and Pennisi 2021"),
    "log_cell_dose": (1, "higher cell dose: Hay 2017"),
    "flu_cy": (1, "flu/Cy lymphodepletion: Hay 2017"),
    "log2_m_easix": (1, "m-EASIX: AUC 0.80 for grade >= 3 CRS (Pennisi 2021)"),
    "log2_easix": (1, "EASIX: OR 1.72 per doubling (Korell 2022)"),
}


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def _published_rates() -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Severe CRS rates by "product|diagnosis", by product (mean over its trials) and by
    therapy class (median over its products), from `PUBLISHED_SEVERE_RATE`."""
    by_product: dict[str, list[float]] = {}
    for (product, _), rate in PUBLISHED_SEVERE_RATE.items():
        by_product.setdefault(product, []).append(rate)
    product_rate = {p: float(np.mean(r)) for p, r in by_product.items()}
    cart = {"axi-cel", "tisa-cel", "liso-cel", "brexu-cel", "ide-cel", "cilta-cel", "obe-cel"}
    class_rate = {
        "CAR-T": float(np.median([v for p, v in product_rate.items() if p in cart])),
        "bispecific": float(np.median([v for p, v in product_rate.items() if p not in cart])),
    }
    by_pair = {f"{p}|{d}": r for (p, d), r in PUBLISHED_SEVERE_RATE.items()}
    return by_pair, product_rate, class_rate


# Computed once: every fit and transform of the parsimonious design looks them up.
_BY_PAIR, _BY_PRODUCT, _BY_CLASS = _published_rates()


def product_log_odds(valid: pd.DataFrame) -> np.ndarray:
    """Log-odds of each row's product's published severe CRS rate (diagnosis-specific where
    the trials differ; the product's mean rate otherwise; the therapy class's median for a
    product without a trial)."""
    product = valid["product"].astype("str")
    key = product + "|" + valid["diagnosis"].astype("str")
    fallback = product.map(_BY_PRODUCT).fillna(
        valid["therapy_class"].astype("str").map(_BY_CLASS))
    rates = key.map(_BY_PAIR).fillna(fallback).to_numpy(dtype=float, na_value=np.nan)
    return _logit(rates)


def supported_parameters(n: int, prevalence: float, anticipated_auroc: float,
                         limit: int = 60) -> int:
    """The most parameters a cohort of ``n`` supports (Riley's criteria 1 and 2), 0 if none."""
    best = 0
    for p in range(1, limit + 1):
        if not minimum_sample_size(p, prevalence, anticipated_auroc, available_n=n).supported:
            break
        best = p
    return best


class ParsimoniousFeatures(FeatureBuilder):
    """The linear design restricted to `PARSIMONIOUS_FACTORS`, as many as the cohort supports.

    Parameters
    ----------
    only
        Use only these factors (names in `PARSIMONIOUS_FACTORS`, e.g. `BURDEN_FACTORS`); None:
        every factor. A factor that does not vary in the training rows is left out, so the
        design may be empty (see `kept_`).
    max_parameters
        Use at most this many design columns, leading factors first (the first is always
        kept); None: every factor that varies in the training rows.
    anticipated_auroc
        When given (and labels are given to `fit`), also at most as many design columns as the
        training rows support by Riley's criteria 1 and 2 at this anticipated AUROC
        (`supported_parameters`); None: no such limit.

    Attributes
    ----------
    kept_ : list of str
        Design columns used, in factor order.
    factors_ : list of str
        The factors they belong to.
    budget_ : int
        Parameters allowed.
    """

    def __init__(self, max_parameters: int | None = None,
                 anticipated_auroc: float | None = None,
                 only: tuple[str, ...] | None = None) -> None:
        super().__init__(kind="linear", splines=False)
        self.max_parameters = max_parameters
        self.anticipated_auroc = anticipated_auroc
        self.only = only

    def _full(self, X: pd.DataFrame) -> pd.DataFrame:
        design = super().transform(X)
        prior = (product_log_odds(X) - self.product_mean_) / self.product_sd_
        return design.assign(**{PRODUCT_COLUMN: prior})

    def fit(self, X: pd.DataFrame, y: object = None) -> ParsimoniousFeatures:
        """Learn the linear features on ``X`` and choose the factors kept (see the class)."""
        self._fit(X, y)
        return self

    def fit_transform(self, X: pd.DataFrame, y: object = None, **fit_params) -> pd.DataFrame:
        """`fit`, then the design of the same rows (built once: the search refits it often)."""
        return self._fit(X, y)[self.kept_]

    def _fit(self, X: pd.DataFrame, y: object) -> pd.DataFrame:
        """Fit; return every factor's design of ``X``."""
        super().fit(X)
        prior = product_log_odds(X)
        self.product_mean_ = float(np.mean(prior))
        sd = float(np.std(prior))
        self.product_sd_ = sd if sd > 1e-9 else 1.0
        design = self._full(X)
        self.budget_ = (len(design.columns) if self.max_parameters is None
                        else int(self.max_parameters))
        if self.anticipated_auroc is not None and y is not None:
            labels = np.asarray(y, dtype=float)
            if 0 < labels.mean() < 1:
                self.budget_ = min(self.budget_, supported_parameters(
                    len(labels), float(labels.mean()), float(self.anticipated_auroc)))
        kept: list[str] = []
        factors: list[str] = []
        for factor, columns, _ in PARSIMONIOUS_FACTORS:
            if self.only is not None and factor not in self.only:
                continue
            block = []
            for column in columns:
                if column in design and design[column].std() > 1e-9:
                    block.append(column)
                    flag = f"{column}_missing"
                    if column in MISSING_INDICATORS and flag in design and design[flag].std() > 0:
                        block.append(flag)
            if not block:
                continue  # constant on this cohort (one product, no missing values): no parameter
            if kept and len(kept) + len(block) > self.budget_:
                break
            kept.extend(block)
            factors.append(factor)
        self.kept_ = kept
        self.factors_ = factors
        return design

    def to_dict(self) -> dict:
        """The fitted state as JSON-able data: the linear features plus the parsimonious part."""
        return {**super().to_dict(), "parsimonious": {
            "max_parameters": self.max_parameters,
            "anticipated_auroc": self.anticipated_auroc,
            "only": None if self.only is None else list(self.only),
            "product_mean": self.product_mean_,
            "product_sd": self.product_sd_, "budget": self.budget_, "kept": list(self.kept_),
            "factors": list(self.factors_)}}

    @classmethod
    def from_dict(cls, state: dict) -> ParsimoniousFeatures:
        """The fitted ParsimoniousFeatures that `to_dict` described.

        Raises
        ------
        ValueError
            The state is not that of a parsimonious design of this crsrisk.
        """
        try:
            part = state["parsimonious"]
            linear = FeatureBuilder.from_dict({k: v for k, v in state.items()
                                               if k != "parsimonious"})
            only = part.get("only")
            builder = cls(part["max_parameters"], part.get("anticipated_auroc"),
                          None if only is None else tuple(str(f) for f in only))
            builder.__dict__.update({k: v for k, v in linear.__dict__.items()
                                     if k.endswith("_") and not k.startswith("_")})
            builder.product_mean_ = float(part["product_mean"])
            builder.product_sd_ = float(part["product_sd"])
            builder.budget_ = int(part["budget"])
            builder.kept_ = [str(c) for c in part["kept"]]
            builder.factors_ = [str(f) for f in part["factors"]]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a parsimonious feature state ({exc})") from exc
        return builder

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """The parsimonious design for validated rows (columns `kept_`)."""
        return self._full(X)[self.kept_]

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray(self.kept_, dtype=object)


def monotone_constraints(columns: list[str]) -> dict[str, int]:
    """XGBoost's ``monotone_constraints`` for a tree design with these columns."""
    return {c: MONOTONE_DIRECTIONS[c][0] for c in columns if c in MONOTONE_DIRECTIONS}


@dataclass(frozen=True)
class CandidateSize:
    """One candidate's parameters against Riley's minimum sample size, and the decision."""

    name: str
    size: SampleSize
    fitted: bool
    reason: str
    splines: tuple[bool, ...] | None = None  # the logistic search's spline options, if limited

    def as_dict(self) -> dict:
        return {"candidate": self.name, "fitted": self.fitted, "reason": self.reason,
                **self.size.as_dict()}


# What `candidate_parameters` counts for each kind of candidate, in words for the printout.
PARAMETERS_COUNTED = {
    "published score": "1 slope on the score, +1 for a missing-score indicator: the score's "
                       "weights are published, only its recalibration is fitted",
    "burden": "one slope on the disease-scaled tumour-burden measure, +1 for a "
              "missing-assessment indicator where some rows lack it",
    "parsimonious": "one per design column of every pre-specified factor that varies (burden "
                    "also has a missing-assessment column): the largest design its search may "
                    "fit; the search also tries only the leading factors the rows support, and "
                    "CV log loss chooses",
    "logistic": "one per design column, the larger of the designs searched (with splines: one "
                "per spline basis column); where the cohort supports only the design without "
                "splines, the search leaves them out and that design is counted",
    "xgboost": "the candidate predictor parameters the trees can split on (the linear design's "
               "columns, as Riley's criteria count them for any method). Boosted trees spend "
               "more than that (a cut-point per split, interactions up to the tree depth; van "
               "der Ploeg et al. 2014 found such methods need several times the events per "
               "variable of logistic regression), so the check is lenient for XGBoost: a "
               "cohort it skips cannot support the trees either",
}


def candidate_parameters(name: str, valid: pd.DataFrame, y: np.ndarray,
                         config: TrainConfig,
                         designs: Mapping[bool, int] | None = None) -> int:
    """Parameters a candidate estimates on this cohort, as `PARAMETERS_COUNTED` says (for
    XGBoost the linear design's columns: a lower bound on what a tree ensemble spends).
    ``designs``: the linear design's columns without and with splines, when already counted."""
    if name in ("m_easix", "easix", "car_hematotox"):
        return 1 + int(ScoreComparator(score=name).fit(valid, y).has_indicator_)
    if name == "parsimonious":
        return len(ParsimoniousFeatures().fit(valid).kept_)
    if name == "burden":
        return len(ParsimoniousFeatures(only=BURDEN_FACTORS).fit(valid).kept_)
    splines = config.search.logistic_splines if name == "logistic" else (False,)
    designs = designs if designs is not None else _linear_designs(valid, splines)
    return max(designs[s] for s in splines)


def _linear_designs(valid: pd.DataFrame, splines: Iterable[bool]) -> dict[bool, int]:
    """Columns of the linear design for each spline option asked."""
    return {s: len(FeatureBuilder(kind="linear", splines=s).fit(valid).feature_names_out_)
            for s in dict.fromkeys(splines)}


def searched_config(config: TrainConfig, sizes: Sequence[CandidateSize]) -> TrainConfig:
    """``config`` with each search limited as `check_candidates` decided (today: the logistic
    candidate's spline options, when only the design without splines is supported)."""
    for size in sizes:
        if size.splines is not None:
            search = config.search.model_copy(update={"logistic_splines": list(size.splines)})
            config = config.model_copy(update={"search": search})
    return config


def _supported_without_splines(designs: Mapping[bool, int], y: np.ndarray, config: TrainConfig,
                               full: SampleSize) -> CandidateSize | None:
    """The logistic candidate searched without splines, when only that design is supported."""
    if set(config.search.logistic_splines) != {False, True}:
        return None
    size = minimum_sample_size(designs[False], float(np.mean(y)),
                               config.sample_size.anticipated_auroc, available_n=len(y))
    if not size.supported:
        return None
    return CandidateSize("logistic", size, True, (
        f"supported without splines: {size.parameters} parameters need {size.parameter_n:,} "
        f"patients, {full.parameters} with splines would need {full.parameter_n:,}; the "
        "search leaves splines out (force logistic to search both)"), splines=(False,))


def check_candidates(valid: pd.DataFrame, y: np.ndarray,
                     config: TrainConfig) -> list[CandidateSize]:
    """Riley's minimum sample size for every configured candidate, and whether it is fitted.

    A candidate outside `PRESPECIFIED` whose parameters the cohort cannot support (criteria 1
    and 2) is skipped, unless the config forces it (``sample_size.force``) or skipping is off.
    """
    y = np.asarray(y, dtype=int)
    prevalence = float(y.mean())
    settings = config.sample_size
    linear = [n for n in config.candidates if n not in PRESPECIFIED]
    # One fit per spline option, shared by every candidate counted on the linear design.
    designs = _linear_designs(valid, (False, *config.search.logistic_splines)) if linear else {}
    out = []
    for name in config.candidates:
        parameters = candidate_parameters(name, valid, y, config, designs)
        empty = name == "burden" and parameters == 0
        size = minimum_sample_size(max(parameters, 1), prevalence, settings.anticipated_auroc,
                                   available_n=len(y))
        if empty:
            fitted, reason = False, ("skipped: no tumour-burden measure (marrow blasts, SPD, "
                                     "LDH or marrow plasma cells for the diagnosis) varies in "
                                     "the cohort")
        elif size.supported:
            fitted, reason = True, "supported"
        elif name in PRESPECIFIED:
            fitted, reason = True, (f"below its minimum of {size.parameter_n:,}; fitted anyway: "
                                    "pre-specified and the floor for a small cohort")
        elif name in settings.force:
            fitted, reason = True, (f"below its minimum of {size.parameter_n:,}; forced by "
                                    "sample_size.force")
        elif not settings.skip_unsupported:
            fitted, reason = True, (f"below its minimum of {size.parameter_n:,}; fitted "
                                    "(sample_size.skip_unsupported is off)")
        elif name == "logistic" and (smaller := _supported_without_splines(
                designs, y, config, size)) is not None:
            out.append(smaller)
            continue
        else:
            fitted, reason = False, (
                f"skipped: {size.parameters} parameters need {size.parameter_n:,} patients "
                f"(shrinkage >= 0.9, R2 optimism <= 0.05 at anticipated AUROC "
                f"{settings.anticipated_auroc}), the cohort has {len(y):,}; force it with "
                f"sample_size.force: [{name}] in the train config")
        out.append(CandidateSize(name, size, fitted, reason))
    return out
