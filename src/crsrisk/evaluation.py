"""External validation and recalibration of a fitted model on a new labelled cohort.

`evaluate_model` measures a model on new rows: metrics with bootstrap intervals, calibration,
decision curves against the published scores, subgroups. `log_evaluation` records that as an
MLflow run in the model's experiment, linked to its registered version. `recalibrate` refits the
calibration intercept and slope for a new site and `register_recalibrated` logs and registers
the result as a new version (alias ``challenger``).

Nothing here logs patient ids or rows: only counts, fingerprints, metrics and aggregate tables.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from crsrisk.baselines import PUBLISHED_SCORES, ScoreComparator
from crsrisk.errors import CrsriskError
from crsrisk.evaluate import (
    age_band,
    bootstrap_metrics,
    calibration_table,
    decision_curve,
    point_metrics,
    subgroup_table,
)
from crsrisk.riskmodel import PROBABILITY_FLOOR, Recalibrated, RiskModel

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from crsrisk.config import TrackingConfig

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
) -> Evaluation:
    """Performance of ``model`` on a labelled cohort, with percentile-bootstrap intervals.

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

    Returns
    -------
    Evaluation
    """
    y = severe.astype(int).to_numpy()
    events = int(y.sum())
    if len(y) == 0 or events in (0, len(y)):
        raise EvaluationError(
            f"The cohort has {events} severe CRS events among {len(y)} rows: discrimination and "
            "calibration need both outcomes; evaluate on a cohort with and without severe CRS."
        )
    notes = []
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
    return Evaluation(metrics, thresholds, calibration_table(y, risk), decision, subgroup,
                      comparator_metrics, risk, comparator_risk, y, n_boot, seed, notes=notes)


def _clean(value: object) -> object:
    """JSON-safe: NaN and infinities as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
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
    """
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
            "method": "percentile bootstrap, patients resampled with replacement",
        },
        "thresholds": evaluation.thresholds,
        "metrics": _interval_dict(evaluation.metrics),
        "comparators": {
            "method": COMPARATOR_METHOD,
            **{name: _interval_dict(t) for name, t in evaluation.comparators.items()},
        },
        "calibration_table": evaluation.calibration.to_dict("records"),
        "decision_curve": wide.to_dict("records"),
        "subgroups": (evaluation.subgroups.to_dict("records")
                      if evaluation.subgroups is not None else None),
        "notes": evaluation.notes,
    }
    return _clean(payload)  # type: ignore[return-value]


def data_description(
    valid: pd.DataFrame, severe: pd.Series, provenance: dict[str, str], *,
    rows_read: int | None = None, rows_rejected: int | None = None, regraded: int = 0,
) -> dict[str, object]:
    """Counts and fingerprints of a labelled cohort, free of patient data."""
    from crsrisk.tracking import data_fingerprint

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


# ------------------------------------------------------------------------------------------
# Where a loaded model sits in the registry
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A registered model version that a loaded model was identified as."""

    name: str
    version: str
    run_id: str | None
    experiment_id: str | None
    how: str


_REGISTRY_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))")


def find_version(
    client: MlflowClient, uri: str, model: RiskModel
) -> tuple[ModelRef | None, str]:
    """The registered version behind ``uri`` (or matching ``model``), and how it was found.

    A ``models:/name/version`` or ``models:/name@alias`` URI is looked up directly. Anything
    else (an exported directory) is matched by the model's name and version, and accepted only
    when the registered version's training-data fingerprint and candidate agree with the
    model's own: a registry elsewhere may hold a different model under the same number.

    Returns
    -------
    (ModelRef or None, str)
        The version (None when not found) and one sentence saying how, or why not.
    """
    from mlflow.exceptions import MlflowException

    match = _REGISTRY_URI.fullmatch(str(uri))
    try:
        if match:
            name = match["name"]
            if match["alias"]:
                mv = client.get_model_version_by_alias(name, match["alias"])
            else:
                mv = client.get_model_version(name, match["version"])
            how = f"registered version {mv.name}/{mv.version}"
        else:
            mv = client.get_model_version(model.name, str(model.version))
            tags = mv.tags
            same = (tags.get("data_sha256") == model.info.get("data_sha256")
                    and tags.get("candidate") == model.info.get("candidate"))
            if not same:
                return None, (f"{model.name} version {model.version} in this tracking store is "
                              "a different model (training-data fingerprint or candidate differ)")
            how = (f"{mv.name}/{mv.version}, matched by name, version, training-data fingerprint "
                   "and candidate")
    except MlflowException:
        return None, f"{model.name} version {model.version} is not in this tracking store"
    run_id = mv.tags.get("run_id") or mv.run_id
    experiment_id = None
    if run_id:
        try:
            experiment_id = client.get_run(run_id).info.experiment_id
        except MlflowException:
            run_id = None
    return ModelRef(mv.name, str(mv.version), run_id, experiment_id, how), how


# ------------------------------------------------------------------------------------------
# Logging an evaluation
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedRun:
    run_id: str | None
    linked: ModelRef | None
    message: str


def _summary_line(payload: dict) -> str:
    metrics = payload["metrics"]

    def fmt(name: str) -> str:
        m = metrics.get(name) or {}
        if m.get("estimate") is None:
            return f"{name} n/a"
        lower, upper = m.get("lower"), m.get("upper")
        ci = f" [{lower:.3f}, {upper:.3f}]" if lower is not None and upper is not None else ""
        return f"{name} {m['estimate']:.3f}{ci}"

    data = payload["data"]
    return (f"{fmt('auroc')}; {fmt('calibration_slope')}; {fmt('calibration_intercept')}; "
            f"on {data.get('input_file', '?')} (n={data['rows_valid']}, events={data['events']}, "
            f"sha256 {str(data['data_sha256'])[:12]}) {payload['created']}")


def log_evaluation(
    payload: dict, model: RiskModel, uri: str, tracking: TrackingConfig | None = None
) -> LoggedRun:
    """Record an evaluation as an MLflow run linked to its registered model version.

    The run goes to the experiment of the model's training run (or the configured experiment
    when the model is not found in the registry), tagged ``run_type=evaluation`` and
    ``evaluation_of=<name>/<version>``, with each metric's estimate, lower and upper bound and
    the JSON as ``evaluation.json``. The model version gets a tag ``evaluation.<run_id>``.

    Parameters
    ----------
    payload
        From `evaluation_payload`.
    model, uri
        The model evaluated.
    tracking
        A `TrackingConfig` (default: the built-in defaults, or ``MLFLOW_TRACKING_URI``).

    Returns
    -------
    LoggedRun
        The run id (None when no tracking store could be used) and one sentence saying what
        happened.
    """
    from mlflow.exceptions import MlflowException

    from crsrisk.registry import RegistryError, connect

    try:
        store = connect(tracking)
        return _log_evaluation(store, payload, model, uri)
    except RegistryError as exc:
        return LoggedRun(None, None, f"not logged: {exc}")
    except MlflowException as exc:
        return LoggedRun(None, None, f"not logged: the tracking store refused the run "
                                     f"({exc.message})")


def _log_evaluation(store, payload: dict, model: RiskModel, uri: str) -> LoggedRun:
    import mlflow

    from crsrisk.tracking import git_commit, library_versions

    ref, how = find_version(store.client, uri, model)
    experiment_id = (ref.experiment_id if ref and ref.experiment_id else store.experiment_id)
    target = f"{ref.name}/{ref.version}" if ref else f"{model.name}/{model.version}"
    data = payload["data"]
    tags = {
        "run_type": "evaluation",
        "evaluation_of": target,
        "evaluated_model_uri": str(uri),
        "linked_to_registry": str(ref is not None).lower(),
        "data_sha256": str(data["data_sha256"]),
        "data_rows": str(data["rows_valid"]),
        "data_events": str(data["events"]),
        "input_file": str(data.get("input_file", "")),
        "mapping_fingerprint": str(data.get("mapping_fingerprint", "none")),
        "contract_version": str(data["contract_version"]),
        "git_commit": git_commit(),
        **library_versions(),
    }
    metrics = {}
    for name, m in payload["metrics"].items():
        for suffix, key in (("", "estimate"), ("_lower", "lower"), ("_upper", "upper")):
            if m.get(key) is not None:
                metrics[f"{name}{suffix}"] = float(m[key])
    for score, table in payload["comparators"].items():
        if isinstance(table, dict):
            for name, m in table.items():
                if m.get("estimate") is not None:
                    metrics[f"{score}_{name}"] = float(m["estimate"])
    with mlflow.start_run(experiment_id=experiment_id,
                          run_name=f"evaluate {target}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params({"n_boot": payload["bootstrap"]["resamples"],
                           "seed": payload["bootstrap"]["seed"],
                           "model_kind": model.kind, "calibration": model.calibrator.method})
        mlflow.log_metrics(metrics)
        mlflow.log_dict(payload, "evaluation.json")
        run_id = run.info.run_id
    if ref is None:
        return LoggedRun(run_id, None, f"logged as run {run_id} in {store.uri}, not linked to a "
                         f"model version: {how}")
    store.client.set_model_version_tag(ref.name, ref.version, f"evaluation.{run_id}",
                                       _summary_line(payload))
    return LoggedRun(run_id, ref, f"logged as run {run_id}, linked to {how}")


# ------------------------------------------------------------------------------------------
# Recalibration
# ------------------------------------------------------------------------------------------

RECALIBRATION_METRICS = ("calibration_intercept", "calibration_slope", "log_loss", "brier",
                         "ece", "auroc")


@dataclass
class Recalibration:
    """A model recalibrated for a new cohort, with calibration before and after."""

    model: RiskModel
    intercept: float
    slope: float
    before: dict[str, float]  # the original model on the whole cohort
    after_cv: dict[str, float]  # cross-validated: each row recalibrated by a fit without it
    after_apparent: dict[str, float]  # the final fit on the rows it was fitted on
    folds: int
    cohort: str


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def _fit_recalibration(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    # C = 1e6, as the model's own calibrator: unpenalised in practice, finite under separation.
    fit = LogisticRegression(C=1e6, max_iter=1000)
    fit.fit(z.reshape(-1, 1), y)
    return float(fit.intercept_[0]), float(fit.coef_[0, 0])


def _recalibrated(z: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-(intercept + slope * z)))
    return np.clip(p, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)


def recalibrate(
    model: RiskModel,
    valid: pd.DataFrame,
    severe: pd.Series,
    *,
    cohort: str,
    folds: int = 5,
    seed: int = 0,
) -> Recalibration:
    """Refit the calibration intercept and slope of ``model`` on a new cohort.

    Logistic recalibration: ``logit(new risk) = a + b * logit(current risk)``, fitted by
    maximum likelihood on all rows. "After" is also estimated by ``folds``-fold cross-validation
    (each row recalibrated by a fit that did not see it), since the apparent calibration of the
    final fit on its own rows is intercept 0 and slope 1 by construction.

    Parameters
    ----------
    model
        The model to update; its estimator and features are kept, only calibration changes.
    valid, severe
        Validated rows of the new cohort and their outcomes (0/1).
    cohort
        A name for the cohort (site or file), recorded in the new model.
    folds, seed
        The cross-validation of "after".

    Returns
    -------
    Recalibration
    """
    y = severe.astype(int).to_numpy()
    events = int(y.sum())
    rarer = min(events, len(y) - events)
    if rarer < max(MIN_EVENTS, folds):
        raise EvaluationError(
            f"The cohort has only {rarer} rows of its rarer outcome: recalibration needs at "
            f"least {max(MIN_EVENTS, folds)} events and non-events; add rows."
        )
    z = _logit(model.risk(valid))
    intercept, slope = _fit_recalibration(z, y)
    if not slope > 0:
        raise EvaluationError(
            f"Recalibration on {cohort} gives a slope of {slope:.3f}: the model does not rank "
            "patients at this site; do not recalibrate it, retrain or do not use it there."
        )
    oof = np.empty(len(y))
    for train_pos, test_pos in StratifiedKFold(folds, shuffle=True,
                                              random_state=seed).split(z, y):
        a, b = _fit_recalibration(z[train_pos], y[train_pos])
        oof[test_pos] = _recalibrated(z[test_pos], a, b)

    def pick(metrics: dict[str, float]) -> dict[str, float]:
        return {k: float(metrics[k]) for k in RECALIBRATION_METRICS}

    before = pick(point_metrics(y, model.risk(valid)))
    after_cv = pick(point_metrics(y, oof))
    after_apparent = pick(point_metrics(y, _recalibrated(z, intercept, slope)))
    calibrator = Recalibrated(model.calibrator, intercept, slope, cohort)
    info = {
        **model.info,
        "candidate": f"{model.info.get('candidate', model.kind)}+recalibrated",
        "calibration": calibrator.method,
        "recalibrated_from": f"{model.name}/{model.version}",
        "recalibration_cohort": cohort,
        "recalibration_intercept": intercept,
        "recalibration_slope": slope,
    }
    new = dataclasses.replace(model, calibrator=calibrator, info=info)
    return Recalibration(new, intercept, slope, before, after_cv, after_apparent, folds, cohort)


@dataclass(frozen=True)
class RegisteredRecalibration:
    run_id: str
    version: str
    model_uri: str
    source: str


def register_recalibrated(
    recalibration: Recalibration,
    source_uri: str,
    source: RiskModel,
    data: dict[str, object],
    tracking: TrackingConfig | None = None,
) -> RegisteredRecalibration:
    """Log the recalibrated model like a training run, register it, make it ``challenger``.

    Parameters
    ----------
    recalibration
        From `recalibrate`.
    source_uri, source
        The model it was recalibrated from, as given and as loaded.
    data
        The new cohort's description (`data_description`).
    tracking
        A `TrackingConfig` (default: the built-in defaults, or ``MLFLOW_TRACKING_URI``).
    """
    import mlflow

    from crsrisk.columns import CONTRACT_VERSION
    from crsrisk.registry import CHALLENGER, METRIC_TAG_PREFIX, connect, set_alias
    from crsrisk.tracking import git_commit, library_versions, log_risk_model

    store = connect(tracking)
    ref, how = find_version(store.client, source_uri, source)
    name = ref.name if ref else source.name
    store = dataclasses.replace(store, model_name=name,
                                experiment_id=(ref.experiment_id if ref and ref.experiment_id
                                               else store.experiment_id))
    existing = store.client.search_model_versions(f"name = '{name}'")
    version = str(1 + max((int(v.version) for v in existing), default=0))
    model = recalibration.model
    model.name, model.version = name, version
    source_label = f"{ref.name}/{ref.version}" if ref else f"{source.name}/{source.version}"
    metrics = {
        **{f"before_{k}": v for k, v in recalibration.before.items()},
        **{f"after_cv_{k}": v for k, v in recalibration.after_cv.items()},
        "recalibration_intercept": recalibration.intercept,
        "recalibration_slope": recalibration.slope,
    }
    with mlflow.start_run(experiment_id=store.experiment_id, run_name="recalibrate") as run:
        mlflow.set_tags({
            "run_type": "recalibration",
            "recalibrated_from": source_label,
            "source_linked": how,
            "source_run_id": (ref.run_id or "") if ref else "",
            "data_sha256": str(data["data_sha256"]),
            "data_rows": str(data["rows_valid"]),
            "data_events": str(data["events"]),
            "input_file": str(data.get("input_file", "")),
            "mapping_fingerprint": str(data.get("mapping_fingerprint", "none")),
            "contract_version": CONTRACT_VERSION,
            "git_commit": git_commit(),
            **library_versions(),
        })
        mlflow.log_params({"folds": recalibration.folds, "cohort": recalibration.cohort,
                           "base_calibration": source.calibrator.method})
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        mlflow.log_dict(_clean({"source": source_label, "data": data,
                                "intercept": recalibration.intercept,
                                "slope": recalibration.slope,
                                "before": recalibration.before,
                                "after_cross_validated": recalibration.after_cv,
                                "after_apparent": recalibration.after_apparent}),
                        "recalibration.json")
        info = log_risk_model(model)
        registered = mlflow.register_model(info.model_uri, name)
        run_id = run.info.run_id
    registered_version = str(registered.version)  # an int on some stores
    if registered_version != version:
        store.client.set_model_version_tag(name, registered_version, "version_in_scores",
                                           version)
    tags = {
        f"{METRIC_TAG_PREFIX}recal_cv_{k}": f"{v:.6f}"
        for k, v in recalibration.after_cv.items() if math.isfinite(v)
    }
    tags.update({
        "candidate": model.info["candidate"],
        "contract_version": CONTRACT_VERSION,
        "data_sha256": str(model.info.get("data_sha256", "")),
        "recalibration_data_sha256": str(data["data_sha256"]),
        "recalibrated_from": source_label,
        "run_id": run_id,
    })
    for key, value in tags.items():
        store.client.set_model_version_tag(name, registered_version, key, value)
    set_alias(store, CHALLENGER, registered_version,
              f"recalibrated for {recalibration.cohort} from {source_label}")
    return RegisteredRecalibration(run_id, registered_version,
                                   f"models:/{name}/{registered_version}", source_label)


def write_json(payload: dict, out: str | Path) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    from crsrisk.tableio import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
