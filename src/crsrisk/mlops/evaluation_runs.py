"""Evaluation and recalibration runs in MLflow, linked to the registered version they concern.

`log_evaluation` records an external validation as a run in the model's experiment, linked to
its version; `register_recalibrated` logs a recalibrated model like a training run and registers
it as ``challenger``. Nothing here logs patient ids or rows: only counts, fingerprints, metrics
and aggregate tables.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from crsrisk.config import TrackingConfig
from crsrisk.contract.spec import CONTRACT_VERSION
from crsrisk.evaluation.recalibration import Recalibration
from crsrisk.evaluation.validation import clean_for_json
from crsrisk.mlops.registry import (
    METRIC_TAG_PREFIX,
    RegistryError,
    connect,
    next_version,
    register_logged_model,
)
from crsrisk.mlops.tracking import git_commit, library_versions, log_risk_model
from crsrisk.modeling.riskmodel import RiskModel

__all__ = ["LoggedRun", "ModelRef", "RegisteredRecalibration", "find_version", "log_evaluation",
           "register_recalibrated"]

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
    try:
        store = connect(tracking, create=False)  # log into an existing store only
        return _log_evaluation(store, payload, model, uri)
    except RegistryError as exc:
        return LoggedRun(None, None, f"not logged: {exc}")
    except MlflowException as exc:
        return LoggedRun(None, None, f"not logged: the tracking store refused the run "
                                     f"({exc.message})")


def _log_evaluation(store, payload: dict, model: RiskModel, uri: str) -> LoggedRun:
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
        "validation": str(data.get("validation", "external validation")),
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
    store = connect(tracking)
    ref, how = find_version(store.client, source_uri, source)
    name = ref.name if ref else source.name
    store = dataclasses.replace(store, model_name=name,
                                experiment_id=(ref.experiment_id if ref and ref.experiment_id
                                               else store.experiment_id))
    version = next_version(store)
    model = dataclasses.replace(recalibration.model, name=name, version=version)
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
        mlflow.log_dict(clean_for_json({"source": source_label, "data": data,
                                "intercept": recalibration.intercept,
                                "slope": recalibration.slope,
                                "before": recalibration.before,
                                "after_cross_validated": recalibration.after_cv,
                                "after_apparent": recalibration.after_apparent}),
                        "recalibration.json")
        info = log_risk_model(model)
        run_id = run.info.run_id
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
    registered_version = register_logged_model(
        store, info.model_uri, version, tags,
        f"recalibrated for {recalibration.cohort} from {source_label}")
    return RegisteredRecalibration(run_id, registered_version,
                                   f"models:/{name}/{registered_version}", source_label)


