"""Candidate models, cross-validation, a budgeted search, calibration, tiers and selection.

Pure: a validated table and labels in, fitted RiskModels and their metrics out. MLflow logging
and registration live in tracking.py; the command line only wires them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from crsrisk.config import TrainConfig
from crsrisk.errors import CrsriskError
from crsrisk.evaluation.metrics import bootstrap_metrics, point_metrics
from crsrisk.features.builder import (
    BINARY_FEATURES,
    CATEGORICAL_FEATURES,
    CONTINUOUS_FEATURES,
    FeatureBuilder,
)
from crsrisk.features.published import ScoreComparator
from crsrisk.modeling.adapters import fitted_adapter
from crsrisk.modeling.calibration import Calibrator
from crsrisk.modeling.candidates import (
    BURDEN_FACTORS,
    CandidateSize,
    ParsimoniousFeatures,
    check_candidates,
    monotone_constraints,
    searched_config,
)
from crsrisk.modeling.riskmodel import RiskModel, Tiers
from crsrisk.modeling.tiers import ActionTiers, threshold_performance
from crsrisk.modeling.uncertainty import fit_ensemble
from crsrisk.modeling.validation_design import (
    SELECTED,
    Developed,
    InternalExternal,
    Optimism,
    bootstrap_design,
    bootstrap_optimism,
    internal_external_design,
    performance,
)

__all__ = [
    "COMPARATORS",
    "COMPARATOR_INPUTS",
    "XGB_SPACE",
    "MIN_EVENTS",
    "MIN_ISOTONIC_EVENTS",
    "TrainingError",
    "CandidateResult",
    "TrainingResult",
    "TrainingStep",
    "TrainingProgress",
    "check_training_table",
    "split_train_test",
    "cv_folds",
    "xgboost_trials",
    "make_estimator",
    "search_space",
    "oof_margin",
    "choose_calibration",
    "choose_tiers",
    "fit_candidate",
    "planning_texts",
    "develop",
    "train_models",
    "iter_metrics",
]

COMPARATORS = ("m_easix", "easix", "car_hematotox")
# What each published score needs; if all of it is missing the comparator cannot be fitted.
COMPARATOR_INPUTS = {
    "m_easix": ("ldh_u_l", "crp_mg_l", "platelets_1e9_l"),
    "easix": ("ldh_u_l", "creatinine_mg_dl", "platelets_1e9_l"),
    "car_hematotox": ("platelets_1e9_l", "anc_1e9_l", "hemoglobin_g_dl", "crp_mg_l",
                      "ferritin_ng_ml"),
}
XGB_SPACE = {
    "max_depth": [2, 3, 4],
    "learning_rate": [0.03, 0.05, 0.1],
    "n_estimators": [150, 300, 500],
    "min_child_weight": [1, 5, 10],
    "subsample": [0.7, 0.85, 1.0],
    "colsample_bytree": [0.6, 0.8, 1.0],
    "reg_lambda": [1.0, 5.0, 20.0],
}
MIN_EVENTS = 10
# Isotonic calibration fits a step per distinct level: on fewer events than this in the smaller
# class its steps are noise (and its ties cost discrimination), so only the sigmoid is tried.
MIN_ISOTONIC_EVENTS = 100
# The tree design's columns (fixed by FeatureBuilder), for the monotone constraints.
_TREE_COLUMNS = (*CONTINUOUS_FEATURES, *BINARY_FEATURES, *CATEGORICAL_FEATURES)
# RiskModel kind by candidate
KIND = {"burden": "logistic", "parsimonious": "logistic", "xgboost_monotone": "xgboost"}


class TrainingError(CrsriskError):
    """The labelled table cannot train a model (one sentence: what, and how to fix it)."""


@dataclass
class CandidateResult:
    """One candidate after its search: CV figures, the refit model, its test predictions."""

    name: str
    params: dict
    calibration: str
    cv_metrics: dict[str, float]
    oof_risk: np.ndarray
    model: RiskModel
    test_risk: np.ndarray | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    search: list[dict] = field(default_factory=list)
    test_intervals: pd.DataFrame | None = None  # bootstrap 95% intervals (selected model only)
    apparent: dict[str, float] = field(default_factory=dict)  # on all development rows


@dataclass
class TrainingResult:
    candidates: list[CandidateResult]
    selected: CandidateResult
    train_index: pd.Index
    test_index: pd.Index  # empty under the bootstrap design: every row develops the model
    timings: dict[str, float]
    warnings: list[str]
    sample_size: list[CandidateSize] = field(default_factory=list)
    design: str = "split"  # "split" or "bootstrap"
    optimism: Optimism | None = None  # bootstrap design: optimism-corrected figures
    ensemble_risk: np.ndarray | None = None  # bootstrap models' risks, development rows
    thresholds: pd.DataFrame | None = None  # sensitivity and NPV each action threshold reaches
    internal_external: InternalExternal | None = None  # leave one site / year out


# ------------------------------------------------------------------------------------------
# Checks and splits
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingStep:
    """Where training stands, sent to a progress callback before each cross-validation fit.

    Candidate ``candidate_number`` of ``candidates`` (1-based), search step ``step`` of
    ``steps`` (a hyperparameter configuration), fold ``fold`` of ``folds``.
    """

    candidate: str
    candidate_number: int
    candidates: int
    step: int
    steps: int
    fold: int
    folds: int


# Called with each TrainingStep; training never depends on what it does with it.
TrainingProgress = Callable[[TrainingStep], None]


def check_training_table(valid: pd.DataFrame, y: pd.Series, config: TrainConfig) -> list[str]:
    """Refuse tables that cannot train a model; return warnings for ones that can, poorly."""
    events = int(y.sum())
    if events == 0:
        raise TrainingError(
            f"The training table has no severe CRS events (ASTCT grade >= 3) among {len(y)} "
            "rows: a model needs both outcomes; add episodes with severe CRS."
        )
    if events == len(y):
        raise TrainingError(
            f"Every one of the {len(y)} training rows had severe CRS: a model needs both "
            "outcomes; add episodes without severe CRS."
        )
    if min(events, len(y) - events) < MIN_EVENTS:
        raise TrainingError(
            f"The training table has only {min(events, len(y) - events)} rows of its rarer "
            f"outcome: at least {MIN_EVENTS} of each are needed to cross-validate; add rows."
        )
    for name in config.candidates:
        needed = COMPARATOR_INPUTS.get(name, ())
        empty = [c for c in needed if valid[c].isna().all()]
        if empty:
            raise TrainingError(
                f"{', '.join(empty)} is missing for every row, so the {name} comparator cannot "
                f"be computed: supply it, or drop {name} from candidates in the train config."
            )
    notes = []
    all_missing = [c for c in valid.columns if c in _feature_columns() and valid[c].isna().all()]
    if all_missing:
        notes.append(f"missing for every row, so unused: {', '.join(all_missing)}")
    if events < 50:
        notes.append(f"only {events} events: expect wide intervals and a large CV-to-test gap")
    return notes


def _feature_columns() -> set[str]:
    from crsrisk.contract.spec import BASELINE_NAMES

    return set(BASELINE_NAMES) - {"patient_id", "site", "infusion_date"}


def split_train_test(
    valid: pd.DataFrame, y: pd.Series, config: TrainConfig
) -> tuple[pd.Index, pd.Index]:
    """Hold out the test rows: the latest infusion dates (temporal) or a stratified sample."""
    fraction = config.split.test_fraction
    if config.split.temporal:
        order = valid["infusion_date"].sort_values(kind="stable").index
        cut = int(round(len(order) * (1 - fraction)))
        train, test = order[:cut], order[cut:]
        if y.loc[test].nunique() < 2 or y.loc[train].nunique() < 2:
            raise TrainingError(
                "The temporal split leaves one outcome only on one side: use a larger "
                "test_fraction or a random split (split.temporal: false)."
            )
        return train.sort_values(), test.sort_values()
    train, test = train_test_split(
        valid.index, test_size=fraction, stratify=y, random_state=config.seed
    )
    return pd.Index(np.sort(train)), pd.Index(np.sort(test))


def cv_folds(
    valid: pd.DataFrame, y: pd.Series, config: TrainConfig
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold positions (grouped by site on request)."""
    folds = config.cv.folds
    if config.cv.group_by_site:
        groups = valid["site"].fillna("missing").to_numpy()
        n_groups = len(np.unique(groups))
        if n_groups < folds:
            raise TrainingError(
                f"Grouping by site needs at least {folds} sites, the table has {n_groups}: "
                "lower cv.folds or set cv.group_by_site: false."
            )
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=config.seed)
        return list(splitter.split(valid, y, groups))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=config.seed)
    return list(splitter.split(valid, y))


# ------------------------------------------------------------------------------------------
# Candidates
# ------------------------------------------------------------------------------------------


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def xgboost_trials(n: int, seed: int) -> list[dict]:
    """``n`` configurations drawn from XGB_SPACE, the first a sensible default."""
    rng = np.random.default_rng(seed)
    trials = [dict(max_depth=3, learning_rate=0.05, n_estimators=300, min_child_weight=5,
                   subsample=0.85, colsample_bytree=0.8, reg_lambda=5.0)]
    while len(trials) < n:
        trial = {k: v[rng.integers(len(v))] for k, v in XGB_SPACE.items()}
        if trial not in trials:
            trials.append(trial)
    return trials


def make_estimator(name: str, params: dict, seed: int) -> Pipeline | ScoreComparator:
    """An unfitted estimator for one candidate configuration."""
    if name in COMPARATORS:
        return ScoreComparator(score=name)
    if name == "logistic":
        return Pipeline([
            ("features", FeatureBuilder(kind="linear", splines=params["splines"])),
            ("model", LogisticRegression(C=params["C"], max_iter=5000)),
        ])
    if name in ("burden", "parsimonious"):
        features = (ParsimoniousFeatures(only=BURDEN_FACTORS) if name == "burden" else
                    ParsimoniousFeatures(anticipated_auroc=params.get("anticipated_auroc")))
        # A few design columns: Newton's method reaches the optimum in a few exact steps, about
        # five times faster than L-BFGS here, and the search and bootstrap refit it hundreds of
        # times.
        return Pipeline([
            ("features", features),
            ("model", LogisticRegression(C=params["C"], solver="newton-cholesky",
                                         max_iter=5000)),
        ])
    if name in ("xgboost", "xgboost_monotone"):
        features = FeatureBuilder(kind="tree")
        constraints = (monotone_constraints(list(_TREE_COLUMNS))
                       if name == "xgboost_monotone" else None)
        return Pipeline([
            ("features", features),
            ("model", xgb.XGBClassifier(
                **params,
                monotone_constraints=constraints,
                tree_method="hist",
                enable_categorical=True,
                max_cat_to_onehot=1,
                n_jobs=2,
                random_state=seed,
                eval_metric="logloss",
            )),
        ])
    raise ValueError(f"unknown candidate {name!r}")


def search_space(name: str, config: TrainConfig) -> list[dict]:
    if name in COMPARATORS:
        return [{}]
    if name == "burden":
        return [{"C": c} for c in config.search.parsimonious_c]
    if name == "parsimonious":
        # Every pre-specified factor, or only the leading ones the rows support (Riley's
        # criteria at the anticipated AUROC): chosen with the penalty by CV log loss.
        riley = config.sample_size.anticipated_auroc
        return [{"C": c, "anticipated_auroc": a} for a in (None, riley)
                for c in config.search.parsimonious_c]
    if name == "logistic":
        return [{"C": c, "splines": s} for c in config.search.logistic_c
                for s in config.search.logistic_splines]
    return xgboost_trials(config.search.xgboost_trials, config.seed)


def oof_margin(estimator, X: pd.DataFrame, y: np.ndarray, folds,
               on_fold: Callable[[int], None] | None = None) -> np.ndarray:
    """Out-of-fold log-odds: every row predicted by a model that did not see it.

    ``on_fold`` is called with the fold number (1-based) before each fold's fit.
    """
    margin = np.empty(len(X))
    for number, (train_pos, val_pos) in enumerate(folds, start=1):
        if on_fold is not None:
            on_fold(number)
        fitted = clone(estimator).fit(X.iloc[train_pos], y[train_pos])
        margin[val_pos] = _logit(fitted.predict_proba(X.iloc[val_pos])[:, 1])
    return margin


def choose_calibration(
    margin: np.ndarray, y: np.ndarray, methods, folds
) -> tuple[str, np.ndarray, dict[str, float]]:
    """The calibration method with the lowest cross-validated log loss, and its OOF risks."""
    scores, risks = {}, {}
    for method in methods:
        risk = np.empty(len(y))
        for train_pos, val_pos in folds:
            cal = Calibrator(method).fit(margin[train_pos], y[train_pos])
            risk[val_pos] = cal.predict(margin[val_pos])
        scores[method] = log_loss(y, risk, labels=[0, 1])
        risks[method] = risk
    best = min(scores, key=scores.get)
    return best, risks[best], scores


def choose_tiers(risk: np.ndarray, y: np.ndarray, config: TrainConfig) -> Tiers:
    """High: sensitivity >= target at and above it. Low: NPV >= target below it."""
    event_risks = np.sort(risk[y == 1])[::-1]
    k = int(np.ceil(config.tiers.high_sensitivity * len(event_risks)))
    high = float(event_risks[max(k - 1, 0)])
    order = np.argsort(risk, kind="stable")
    sorted_risk, sorted_y = risk[order], y[order]
    # NPV of "risk < t" for t = each distinct sorted risk: rows strictly below it.
    below_events = np.concatenate([[0], np.cumsum(sorted_y)[:-1]])
    below_n = np.arange(len(sorted_risk))
    first = np.r_[True, sorted_risk[1:] != sorted_risk[:-1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        npv = 1 - below_events / below_n
    ok = first & (below_n > 0) & (npv >= config.tiers.low_npv) & (sorted_risk <= high)
    low = float(sorted_risk[ok].max()) if ok.any() else float(sorted_risk[0])
    return Tiers(low=min(low, high), high=high)


def fit_candidate(
    name: str,
    valid: pd.DataFrame,
    y: np.ndarray,
    folds,
    config: TrainConfig,
    progress: Callable[[int, int, int], None] | None = None,
) -> CandidateResult:
    """Search, calibrate and refit one candidate on the training rows.

    ``progress`` is called with (search step, number of steps, fold) before each fold's fit.
    """
    search = []
    best = None
    space = search_space(name, config)
    for step, params in enumerate(space, start=1):
        estimator = make_estimator(name, params, config.seed)
        on_fold = (None if progress is None
                   else lambda fold, step=step: progress(step, len(space), fold))
        margin = oof_margin(estimator, valid, y, folds, on_fold)
        loss = log_loss(y, 1 / (1 + np.exp(-margin)), labels=[0, 1])
        search.append({**params, "cv_log_loss_uncalibrated": loss})
        if best is None or loss < best[0]:
            best = (loss, params, estimator, margin)
    _, params, estimator, margin = best
    methods = [m for m in config.calibration
               if m != "isotonic" or min(y.sum(), len(y) - y.sum()) >= MIN_ISOTONIC_EVENTS]
    method, oof_risk, cal_scores = choose_calibration(margin, y, methods or ["sigmoid"], folds)
    cv_metrics = {
        "cv_log_loss": log_loss(y, oof_risk, labels=[0, 1]),
        "cv_auroc": roc_auc_score(y, oof_risk),
        "cv_brier": float(np.mean((oof_risk - y) ** 2)),
        **{f"cv_log_loss_{m}": s for m, s in cal_scores.items()},
    }
    action_tiers = ActionTiers.from_config(config.score)
    risk_model = RiskModel(
        adapter=fitted_adapter(KIND.get(name, name), clone(estimator).fit(valid, y)),
        calibrator=Calibrator(method).fit(margin, y),
        tiers=Tiers(*action_tiers.thresholds["CAR-T"]),
        planning=planning_texts(config),
        top_k=config.drivers_top_k,
        name=config.tracking.model_name,
        info={"candidate": name, "calibration": method},
        action_tiers=action_tiers,
    )
    return CandidateResult(name, params, method, cv_metrics, oof_risk, risk_model,
                           search=search)


def planning_texts(config: TrainConfig) -> dict[str, str]:
    """One line of planning actions per tier for a row without therapy-class tiers (CAR-T's)."""
    assert config.score is not None, "load the config with load_train_config"
    tiers = ActionTiers.from_config(config.score)
    return {tier: " | ".join(text.replace("{onset}", "through day 14")
                             for text, diagnoses in tiers.actions["CAR-T"][tier] if not diagnoses)
            for tier in ("low", "intermediate", "high")}


def develop(
    rows: pd.DataFrame, y: np.ndarray, positions: np.ndarray, names: list[str],
    config: TrainConfig,
) -> Developed:
    """The whole development procedure on ``rows``: every candidate's search and calibration,
    then selection by cross-validated log loss. Inner folds keep the copies of one patient
    (same ``positions``) together, so a bootstrap resample cannot validate on its own rows."""
    splitter = StratifiedGroupKFold(config.cv.folds, shuffle=True, random_state=config.seed)
    folds = list(splitter.split(rows, y, positions))
    fitted = {name: fit_candidate(name, rows, y, folds, config) for name in names}
    selected = min(fitted, key=lambda n: fitted[n].cv_metrics["cv_log_loss"])
    return Developed({n: c.model.risk for n, c in fitted.items()}, selected)


def _split_or_all(valid, y_all, config) -> tuple[str, pd.Index, pd.Index]:
    smaller = int(min(y_all.sum(), len(y_all) - y_all.sum()))
    v = config.validation
    if bootstrap_design(smaller, v.bootstrap_below, v.design):
        return "bootstrap", valid.index, valid.index[:0]
    return ("split", *split_train_test(valid, y_all, config))


def train_models(
    valid: pd.DataFrame, severe: pd.Series, config: TrainConfig,
    progress: TrainingProgress | None = None,
) -> TrainingResult:
    """Fit every supported candidate, select by CV log loss, and validate internally.

    Below ``validation.bootstrap_below`` events in the smaller class (or on request) every row
    develops the model and the whole procedure is validated by the optimism bootstrap;
    otherwise a held-out test set is used once. Candidates the cohort cannot support (Riley's
    minimum sample size) are skipped, with the reason in ``sample_size``.

    ``progress``, when given, is called with a `TrainingStep` before each cross-validation fit.
    """
    timings: dict[str, float] = {}
    y_all = severe.astype(int)
    warnings = check_training_table(valid, y_all, config)
    sizes = check_candidates(valid, y_all.to_numpy(), config)
    config = searched_config(config, sizes)
    names = [c.name for c in sizes if c.fitted]
    if not names:
        raise TrainingError(
            f"The cohort ({len(y_all):,} rows, {int(y_all.sum())} events) cannot support any "
            f"configured candidate ({', '.join(config.candidates)}): add parsimonious or a "
            "published score to candidates, or list them under sample_size.force."
        )
    warnings += [f"{c.name}: {c.reason}" for c in sizes if "minimum" in c.reason]
    design, train_index, test_index = _split_or_all(valid, y_all, config)
    train, test = valid.loc[train_index], valid.loc[test_index]
    y_train, y_test = y_all.loc[train_index].to_numpy(), y_all.loc[test_index].to_numpy()
    folds = cv_folds(train, y_all.loc[train_index], config)
    action_tiers = ActionTiers.from_config(config.score)
    results = []
    for number, name in enumerate(names, start=1):
        start = time.perf_counter()
        step = None if progress is None else (
            lambda s, n, f, name=name, number=number: progress(TrainingStep(
                name, number, len(names), s, n, f, len(folds))))
        result = fit_candidate(name, train, y_train, folds, config, step)
        result.apparent = performance(y_train, result.model.risk(train))
        if len(test_index):
            result.test_risk = result.model.risk(test)
            result.test_metrics = point_metrics(y_test, result.test_risk)
        results.append(result)
        timings[f"candidate_{name}"] = time.perf_counter() - start
    selected = min(results, key=lambda r: r.cv_metrics["cv_log_loss"])
    out = TrainingResult(results, selected, train_index, test_index, timings, warnings,
                         sizes, design)
    start = time.perf_counter()
    if design == "split":
        selected.test_intervals = bootstrap_metrics(y_test, selected.test_risk, n_boot=500,
                                                    seed=config.seed)
        timings["test_bootstrap"] = time.perf_counter() - start
    else:
        apparent = {r.name: r.apparent for r in results} | {SELECTED: selected.apparent}
        out.optimism = bootstrap_optimism(
            lambda rows, y, pos: develop(rows, y, pos, names, config), train, y_train,
            apparent, config.validation.bootstrap_repeats, config.seed,
            config.validation.n_jobs)
        timings["optimism_bootstrap"] = time.perf_counter() - start
    out.internal_external = internal_external_design(
        lambda rows, y, pos: develop(rows, y, pos, names, config), train, y_train,
        config.validation.internal_external, design)
    if out.internal_external is not None:
        timings["internal_external"] = out.internal_external.seconds
    out.thresholds = threshold_performance(selected.oof_risk, y_train, train, action_tiers)
    if config.uncertainty.models:
        start = time.perf_counter()
        estimator = make_estimator(selected.name, selected.params, config.seed)
        if isinstance(estimator, Pipeline):
            estimator = estimator.named_steps["model"]
        ensemble, out.ensemble_risk = fit_ensemble(
            selected.model, estimator, train, y_train, config.uncertainty.models,
            config.uncertainty.level, config.seed)
        selected.model = replace(selected.model, uncertainty=ensemble)
        timings["uncertainty"] = time.perf_counter() - start
    return out


def iter_metrics(result: TrainingResult) -> Iterator[tuple[str, dict[str, float]]]:
    for candidate in result.candidates:
        corrected = result.optimism.corrected(candidate.name) if result.optimism else {}
        yield candidate.name, {
            **candidate.cv_metrics,
            **{f"test_{k}": v for k, v in candidate.test_metrics.items()},
            **{f"apparent_{k}": v for k, v in candidate.apparent.items()},
            **{f"corrected_{k}": v for k, v in corrected.items()},
        }
