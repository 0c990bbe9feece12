"""External validation and recalibration of a fitted model on a new labelled cohort.

`evaluate_model` measures a model on new rows: metrics with bootstrap intervals, calibration,
decision curves against the published scores, subgroups. `log_evaluation` records that as an
MLflow run in the model's experiment, linked to its registered version. `recalibrate` refits the
calibration intercept and slope for a new site and `register_recalibrated` logs and registers
the result as a new version (alias ``challenger``).

Nothing here logs patient ids or rows: only counts, fingerprints, metrics and aggregate tables.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from crsrisk.contract.fingerprint import data_fingerprint, row_hashes
from crsrisk.errors import CrsriskError
from crsrisk.evaluation.metrics import (
    INTERVAL_METHOD,
    age_band,
    bootstrap_metrics,
    calibration_table,
    decision_curve,
    subgroup_table,
    undefined_reason,
)
from crsrisk.evaluation.privacy import (
    MIN_CELL,
    check_min_cell,
    pooled_bins,
    private_groups,
    withheld,
)
from crsrisk.features.published import PUBLISHED_SCORES, ScoreComparator
from crsrisk.io import atomic_path
from crsrisk.modeling.riskmodel import PROBABILITY_FLOOR, RiskModel

__all__ = [
    "APPARENT",
    "EXTERNAL",
    "TRAINING_OVERLAP_LIMIT",
    "SUBGROUP_COLUMNS",
    "JSON_THRESHOLDS",
    "COMPARATOR_FOLDS",
    "COMPARATOR_METRICS",
    "COMPARATOR_METHOD",
    "MIN_EVENTS",
    "SIMULATED_ID_PREFIX",
    "EvaluationError",
    "Evaluation",
    "cross_fitted_scores",
    "evaluate_model",
    "rows_seen_in_training",
    "clean_for_json",
    "is_simulated",
    "model_summary",
    "evaluation_payload",
    "data_description",
    "write_json",
]

if TYPE_CHECKING:

    pass

SUBGROUP_COLUMNS = ("therapy_class", "product", "diagnosis", "site", "sex", "age_band")
JSON_THRESHOLDS = (0.02, 0.05, 0.10, 0.15, 0.20, 0.30)
COMPARATOR_FOLDS = 5
COMPARATOR_METRICS = ("auroc", "auprc", "brier", "log_loss")
COMPARATOR_METHOD = (
    "each published score turned into a probability by logistic regression cross-fitted on "
    f"this cohort ({COMPARATOR_FOLDS} folds, every row predicted by a fit that did not see it); "
    "this local fit favours the scores, the model gets no such help"
)
MIN_EVENTS = 10
SIMULATED_ID_PREFIX = "SIM-"
EXTERNAL = "external validation"
APPARENT = "apparent (in-sample) performance, not external validation"
# At or above this share of rows seen in training, evaluate refuses unless told it may.
TRAINING_OVERLAP_LIMIT = 0.5


class EvaluationError(CrsriskError):
    """A cohort cannot be used to evaluate or recalibrate a model."""


# ------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """A model's performance on one labelled cohort (see `evaluate_model`)."""

    metrics: pd.DataFrame  # bootstrap_metrics: metric, estimate, lower, upper, n_resamples
    thresholds: dict[str, float]
    calibration: pd.DataFrame
    decision: pd.DataFrame
    subgroups: pd.DataFrame | None
    comparators: dict[str, pd.DataFrame]
    risk: np.ndarray  # per row, in cohort order: never serialised
    comparator_risk: dict[str, np.ndarray]
    y: np.ndarray
    n_boot: int
    seed: int
    level: float = 0.95
    notes: list[str] = field(default_factory=list)
    validation: str = EXTERNAL  # or APPARENT, when most rows were seen in training
    rows_seen_in_training: int | None = None  # None: the model records no training rows
    undefined: dict[str, str] = field(default_factory=dict)  # metric -> why it is n/a

    def metric(self, name: str) -> dict[str, float]:
        """``estimate``, ``lower``, ``upper`` of one metric."""
        row = self.metrics.set_index("metric").loc[name]
        return {k: float(row[k]) for k in ("estimate", "lower", "upper")}


def cross_fitted_scores(
    valid: pd.DataFrame, y: np.ndarray, *, folds: int = COMPARATOR_FOLDS, seed: int = 0
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Out-of-fold probabilities of each published score on this cohort, and notes.

    Parameters
    ----------
    valid
        Validated contract rows.
    y
        Their outcomes (0/1), in row order.
    folds, seed
        Stratified folds of the cross-fitting.

    Returns
    -------
    (dict of str to ndarray, list of str)
        Probabilities by score name (a score that cannot be fitted is left out) and one note
        per score left out.
    """
    events = int(y.sum())
    if min(events, len(y) - events) < folds:
        return {}, [f"published scores not compared: fewer than {folds} rows of one outcome"]
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(valid, y))
    out, notes = {}, []
    for name in PUBLISHED_SCORES:
        risk = np.empty(len(y))
        try:
            for train_pos, test_pos in splits:
                fitted = ScoreComparator(score=name).fit(valid.iloc[train_pos], y[train_pos])
                risk[test_pos] = fitted.predict_proba(valid.iloc[test_pos])[:, 1]
        except ValueError as exc:
            notes.append(f"{name} not compared: {exc}")
            continue
        out[name] = np.clip(risk, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return out, notes


def evaluate_model(
    model: RiskModel,
    valid: pd.DataFrame,
    severe: pd.Series,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    comparators: bool = True,
    subgroups: bool = True,
    allow_training_rows: bool = False,
) -> Evaluation:
    """Performance of ``model`` on a labelled cohort, with bootstrap intervals.

    Parameters
    ----------
    model
        A fitted RiskModel.
    valid
        Validated contract rows of the new cohort.
    severe
        ASTCT grade >= 3 (0/1), aligned with ``valid``.
    n_boot, seed
        Bootstrap resamples (patients resampled with replacement) and their seed.
    comparators
        Also evaluate the published scores, cross-fitted on this cohort (`cross_fitted_scores`).
    subgroups
        Also compute the subgroup table (therapy class, product, diagnosis, site, sex, age band).
    allow_training_rows
        Evaluate even when at least `TRAINING_OVERLAP_LIMIT` of the rows were seen in training;
        the result is then labelled `APPARENT`. Fewer overlapping rows are counted in the notes.

    Returns
    -------
    Evaluation

    Raises
    ------
    EvaluationError
        Without both outcomes, or when most rows were seen in training and
        ``allow_training_rows`` is False.
    """
    y = severe.astype(int).to_numpy()
    events = int(y.sum())
    if len(y) == 0 or events in (0, len(y)):
        raise EvaluationError(
            f"The cohort has {events} severe CRS events among {len(y)} rows: discrimination and "
            "calibration need both outcomes; evaluate on a cohort with and without severe CRS."
        )
    seen, validation, notes = _training_overlap(model, valid, allow_training_rows)
    if min(events, len(y) - events) < MIN_EVENTS:
        notes.append(f"only {min(events, len(y) - events)} rows of the rarer outcome: the "
                     "intervals are wide and calibration estimates unstable")
    risk = model.risk(valid)
    thresholds = {"low": float(model.tiers.low), "high": float(model.tiers.high)}
    metrics = bootstrap_metrics(y, risk, thresholds, n_boot=n_boot, seed=seed)
    comparator_risk: dict[str, np.ndarray] = {}
    comparator_metrics: dict[str, pd.DataFrame] = {}
    if comparators:
        comparator_risk, more = cross_fitted_scores(valid, y, seed=seed)
        notes.extend(more)
        for name, p in comparator_risk.items():
            table = bootstrap_metrics(y, p, n_boot=n_boot, seed=seed)
            comparator_metrics[name] = table[table["metric"].isin(COMPARATOR_METRICS)]
    subgroup = None
    if subgroups:
        frame = valid.assign(age_band=age_band(valid["age_years"]))
        subgroup = subgroup_table(frame, y, risk, list(SUBGROUP_COLUMNS), thresholds=thresholds,
                                  seed=seed)
    decision = decision_curve(y, {"model": risk, **comparator_risk})
    undefined = _undefined(metrics, y, risk, thresholds)
    notes.extend(f"{metric} n/a: {why}" for metric, why in undefined.items())
    return Evaluation(metrics, thresholds, calibration_table(y, risk), decision, subgroup,
                      comparator_metrics, risk, comparator_risk, y, n_boot, seed, notes=notes,
                      validation=validation, rows_seen_in_training=seen, undefined=undefined)


def rows_seen_in_training(model: RiskModel, valid: pd.DataFrame) -> int | None:
    """How many of ``valid``'s rows match a row ``model`` was trained on (None: not recorded).

    Rows are matched by their contract values (`crsrisk.contract.fingerprint.row_hashes`),
    whatever their patient id; the model records its training rows' hashes when it is logged.
    """
    recorded = model.info.get("training_row_hashes")
    if not recorded:
        return None
    return int(np.isin(row_hashes(valid), np.asarray(recorded, dtype=object)).sum())


def _training_overlap(
    model: RiskModel, valid: pd.DataFrame, allow: bool
) -> tuple[int | None, str, list[str]]:
    """Rows seen in training, the kind of validation this is, and the notes that say so."""
    seen = rows_seen_in_training(model, valid)
    if seen is None:
        return None, EXTERNAL, ["the model records no training rows (logged before crsrisk kept "
                                "them): whether these rows were seen in training is unchecked"]
    if not seen:
        return 0, EXTERNAL, []
    share = f"{seen:,} of {len(valid):,} rows ({seen / len(valid):.0%}) were seen in training"
    if seen < TRAINING_OVERLAP_LIMIT * len(valid):
        return seen, EXTERNAL, [f"{share}: they flatter the figures; evaluate on rows the model "
                                "has not seen"]
    if not allow:
        raise EvaluationError(
            f"{share}: this would measure {APPARENT}. Evaluate on a cohort the model has not "
            "seen, or pass --allow-training-rows to measure apparent performance knowingly.")
    return seen, APPARENT, [f"{share}: {APPARENT}"]


def _undefined(
    metrics: pd.DataFrame, y: np.ndarray, risk: np.ndarray, thresholds: dict[str, float]
) -> dict[str, str]:
    """Why each metric without an estimate or interval is n/a."""
    out = {}
    for row in metrics.itertuples():
        if not math.isfinite(row.estimate):
            out[row.metric] = (undefined_reason(row.metric, y, risk, thresholds)
                               or "undefined on this cohort")
        elif not (math.isfinite(row.lower) and math.isfinite(row.upper)):
            out[f"{row.metric} interval"] = "defined on none of the bootstrap resamples"
    return out


def clean_for_json(value: object) -> object:
    """JSON-safe: NaN and infinities as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): clean_for_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_for_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _interval_dict(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    return {r.metric: {"estimate": r.estimate, "lower": r.lower, "upper": r.upper}
            for r in table.itertuples()}


def is_simulated(valid: pd.DataFrame) -> bool:
    """True when every patient id is one the cohort simulator writes (``SIM-000001``...)."""
    ids = valid["patient_id"].astype("str")
    return bool(len(ids)) and bool(ids.str.startswith(SIMULATED_ID_PREFIX).all())


def model_summary(model: RiskModel, uri: str) -> dict[str, object]:
    """What was evaluated: the model's identity, calibration and tiers."""
    return {
        "uri": str(uri),
        "name": model.name,
        "version": str(model.version),
        "kind": model.kind,
        "calibration": model.calibrator.method,
        "contract_version": model.contract_version,
        "tiers": {"low": model.tiers.low, "high": model.tiers.high},
        "drivers_scale": "log-odds of the model before calibration",
    }


def evaluation_payload(
    evaluation: Evaluation,
    model: RiskModel,
    uri: str,
    data: dict[str, object],
    *,
    min_cell: int = MIN_CELL,
) -> dict[str, object]:
    """The evaluation as a JSON-ready dict (aggregates only: no patient ids, no rows).

    Parameters
    ----------
    evaluation
        From `evaluate_model`.
    model, uri
        The model evaluated and how it was named.
    data
        Description of the cohort (file, fingerprint, counts), see `data_description`.
    min_cell
        Subgroups withhold counts of fewer patients and code sites
        (`crsrisk.evaluation.privacy.private_groups`); neighbouring calibration bins are pooled
        until each holds at least this many events and non-events (`pooled_bins`).
    """
    check_min_cell(min_cell)
    curve = evaluation.decision
    at = curve[np.isin(curve["threshold"].round(2), JSON_THRESHOLDS)]
    wide = at.pivot(index="threshold", columns="strategy", values="net_benefit").reset_index()
    payload = {
        "crsrisk_evaluation": 1,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "crsrisk": importlib.metadata.version("crsrisk"),
        "model": model_summary(model, uri),
        "data": data,
        "bootstrap": {
            "resamples": evaluation.n_boot, "seed": evaluation.seed, "level": evaluation.level,
            "method": INTERVAL_METHOD,
        },
        "thresholds": evaluation.thresholds,
        "metrics": _interval_dict(evaluation.metrics),
        "comparators": {
            "method": COMPARATOR_METHOD,
            **{name: _interval_dict(t) for name, t in evaluation.comparators.items()},
        },
        "calibration_table": private_groups(pooled_bins(evaluation.calibration, min_cell),
                                            min_cell).to_dict("records"),
        "decision_curve": wide.to_dict("records"),
        "subgroups": (private_groups(evaluation.subgroups, min_cell).to_dict("records")
                      if evaluation.subgroups is not None else None),
        "privacy": {"min_cell": min_cell, "withheld": withheld(min_cell),
                    "site": "coded site_1..site_k in the sorted order of the site names"},
        "notes": evaluation.notes,
    }
    return clean_for_json(payload)  # type: ignore[return-value]


def data_description(
    valid: pd.DataFrame, severe: pd.Series, provenance: dict[str, str], *,
    rows_read: int | None = None, rows_rejected: int | None = None, regraded: int = 0,
) -> dict[str, object]:
    """Counts and fingerprints of a labelled cohort, free of patient data."""
    fingerprint = data_fingerprint(valid, severe, provenance)
    events = int(severe.sum())
    return {
        **provenance,
        "rows_read": rows_read if rows_read is not None else len(valid),
        "rows_valid": len(valid),
        "rows_rejected": rows_rejected if rows_rejected is not None else 0,
        "events": events,
        "prevalence": events / len(valid) if len(valid) else None,
        "labels_regraded_from_events": regraded,
        "data_sha256": fingerprint["data_sha256"],
        "contract_version": fingerprint["contract_version"],
        "simulated": is_simulated(valid),
    }


def write_json(payload: dict, out: str | Path) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
