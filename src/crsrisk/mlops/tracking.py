"""One `crsrisk train` = one MLflow run: config, data fingerprint, candidates, plots, the model.

Nothing here logs patient ids or rows: only aggregate counts, hashes and metrics.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from crsrisk.config import TrainConfig  # noqa: E402
from crsrisk.contract.fingerprint import data_fingerprint, row_hashes  # noqa: E402
from crsrisk.contract.spec import CONTRACT_VERSION  # noqa: E402
from crsrisk.evaluation.metrics import point_metrics  # noqa: E402
from crsrisk.evaluation.privacy import (  # noqa: E402
    private_internal_external,
    private_thresholds,
)
from crsrisk.mlops.pyfunc import (  # noqa: E402
    ARTIFACT_KEY,
    CODE_PATH,
    input_metadata,
    signature,
    to_wire,
)
from crsrisk.mlops.registry import (  # noqa: E402
    CHAMPION,
    METRIC_TAG_PREFIX,
    Store,
    next_version,
    register_logged_model,
    set_alias,
    version_by_alias,
)
from crsrisk.modeling.riskmodel import RiskModel  # noqa: E402
from crsrisk.modeling.train import TrainingResult, iter_metrics  # noqa: E402

__all__ = [
    "LIBRARIES",
    "VERSION_METRICS",
    "git_commit",
    "library_versions",
    "config_params",
    "synthetic_example",
    "log_risk_model",
    "RegisteredModel",
    "log_and_register",
]

LIBRARIES = ("pandas", "pandera", "scikit-learn", "xgboost", "shap", "mlflow", "numpy")
VERSION_METRICS = ("test_auroc", "test_log_loss", "test_brier", "test_calibration_slope",
                   "test_calibration_intercept", "cv_log_loss", "cv_auroc", "corrected_auroc",
                   "corrected_calibration_slope", "corrected_calibration_intercept",
                   "corrected_brier")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def library_versions() -> dict[str, str]:
    return {f"lib.{name}": importlib.metadata.version(name) for name in LIBRARIES}


def _flatten(prefix: str, value: object, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)


def config_params(config: TrainConfig) -> dict[str, str]:
    params: dict[str, str] = {}
    _flatten("", config.model_dump(mode="json", exclude={"score"}), params)
    return params


def _plots(result: TrainingResult, y_test: np.ndarray) -> dict[str, plt.Figure]:
    roc, ax = plt.subplots(figsize=(5, 5))
    for c in result.candidates:
        fpr, tpr, _ = roc_curve(y_test, c.test_risk)
        ax.plot(fpr, tpr, label=f"{c.name} (AUROC {c.test_metrics['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, held-out test rows")
    ax.legend(fontsize=8)
    cal, ax2 = plt.subplots(figsize=(5, 5))
    for c in result.candidates:
        observed, predicted = calibration_curve(y_test, c.test_risk, n_bins=10,
                                                strategy="quantile")
        ax2.plot(predicted, observed, marker="o", label=c.name)
    top = max(float(np.max(c.test_risk)) for c in result.candidates)
    ax2.plot([0, top], [0, top], ls=":", color="grey")
    ax2.set(xlabel="predicted risk", ylabel="observed rate", title="Calibration, test rows")
    ax2.legend(fontsize=8)
    return {"plots/roc_test.png": roc, "plots/calibration_test.png": cal}


def synthetic_example() -> pd.DataFrame:
    """A made-up contract row for the model's input example (never a patient's data)."""
    from crsrisk.contract.validate import validate

    row = {
        "patient_id": "EXAMPLE-1", "site": "example", "infusion_date": "2024-01-01",
        "age_years": "60", "sex": "F", "weight_kg": "70", "ecog": "1", "diagnosis": "LBCL",
        "therapy_class": "CAR-T", "product": "axi-cel", "costim_domain": "",
        "cell_dose_1e6_per_kg": "2", "lymphodepletion": "flu_cy", "prior_lines": "2",
        "bridging_therapy": "false", "ldh_u_l": "250", "spd_cm2": "30", "bulky_disease": "false",
        "crp_mg_l": "20", "ferritin_ng_ml": "700", "platelets_1e9_l": "150",
        "anc_1e9_l": "3", "hemoglobin_g_dl": "11", "creatinine_mg_dl": "0.9",
        "hlh_history": "false",
    }
    return to_wire(validate(pd.DataFrame([row])).valid)


def log_risk_model(model: RiskModel) -> mlflow.models.model.ModelInfo:
    """Log ``model`` as the active run's PythonModel (signature, synthetic input example).

    The PythonModel is logged as code (`crsrisk.mlops._pyfunc_code`, MLflow "models from
    code"), so MLflow writes no ``python_model.pkl``; the fitted model is the ``risk_model``
    artefact folder written by `RiskModel.save`.
    """
    with tempfile.TemporaryDirectory() as tmp:
        folder = model.save(Path(tmp) / "risk_model")
        with warnings.catch_warnings():
            # mlflow suggests type-hint based validation; the model checks its input itself.
            warnings.filterwarnings("ignore", message=".*type hint.*", category=UserWarning)
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=str(CODE_PATH),
                artifacts={ARTIFACT_KEY: str(folder)},
                signature=signature(),
                input_example=synthetic_example(),
                metadata=input_metadata(),
                pip_requirements=[f"crsrisk=={importlib.metadata.version('crsrisk')}"],
            )


@dataclass(frozen=True)
class RegisteredModel:
    run_id: str
    version: str
    model_uri: str
    champion: bool
    decision: str


def _champion_loss(store: Store, test: pd.DataFrame, y_test: np.ndarray, metric: str):
    champion = version_by_alias(store, CHAMPION)
    if champion is None:
        return None, None
    uri = f"models:/{store.model_name}/{champion}"
    loaded = mlflow.pyfunc.load_model(uri)
    risk_model: RiskModel = loaded.unwrap_python_model().risk_model
    if risk_model.contract_version != CONTRACT_VERSION:
        return champion, None
    metrics = point_metrics(y_test, risk_model.risk(test))
    return champion, metrics[metric]


def log_and_register(
    store: Store,
    result: TrainingResult,
    config: TrainConfig,
    valid: pd.DataFrame,
    severe: pd.Series,
    provenance: dict[str, str],
) -> RegisteredModel:
    """Log the training run with its nested candidate runs, the model, and register it."""
    y_test = severe.loc[result.test_index].astype(int).to_numpy()
    selected = result.selected
    fingerprint = data_fingerprint(valid, severe, provenance)
    version = next_version(store)
    # The registered model: the selected one with its version and where its data came from.
    selected.model = replace(selected.model, version=version, info={
        **selected.model.info,
        "data_sha256": fingerprint["data_sha256"],
        "mapping_fingerprint": provenance.get("mapping_fingerprint", "none"),
        "training_row_hashes": row_hashes(valid).tolist(),
    })
    with mlflow.start_run(experiment_id=store.experiment_id, run_name="train") as run:
        mlflow.log_params(config_params(config))
        mlflow.set_tags({**fingerprint, "git_commit": git_commit(), **library_versions(),
                         "selected_candidate": selected.name})
        for name, metrics in iter_metrics(result):
            with mlflow.start_run(experiment_id=store.experiment_id, run_name=name,
                                  nested=True):
                candidate = next(c for c in result.candidates if c.name == name)
                mlflow.log_params({**{k: str(v) for k, v in candidate.params.items()},
                                   "calibration": candidate.calibration})
                mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
                mlflow.log_dict({"search": candidate.search}, "search.json")
        mlflow.log_metrics({
            **{k: v for k, v in selected.cv_metrics.items() if np.isfinite(v)},
            **{f"test_{k}": v for k, v in selected.test_metrics.items() if np.isfinite(v)},
            **{f"timing_{k}_s": v for k, v in result.timings.items()},
        })
        intervals = selected.test_intervals
        if intervals is not None:
            mlflow.log_metrics({
                f"test_{r.metric}_{bound}": getattr(r, bound)
                for r in intervals.itertuples() for bound in ("lower", "upper")
                if np.isfinite(getattr(r, bound))
            })
            mlflow.log_dict({"test_intervals": intervals.to_dict("records")},
                            "test_intervals.json")
        mlflow.log_dict(
            {"tiers": {"low": selected.model.tiers.low, "high": selected.model.tiers.high},
             "warnings": result.warnings},
            "selection.json",
        )
        figures = _plots(result, y_test) if len(result.test_index) else {}
        figures.update(_small_data_records(result, valid, config.privacy.min_cell))
        for path, figure in figures.items():
            mlflow.log_figure(figure, path)
            plt.close(figure)
        info = log_risk_model(selected.model)
        run_id = run.info.run_id
    metrics = {**selected.cv_metrics, **{f"test_{k}": v for k, v in
                                         selected.test_metrics.items()},
               **({f"corrected_{k}": v for k, v in result.optimism.corrected().items()}
                  if result.optimism else {})}
    tags = {f"{METRIC_TAG_PREFIX}{k}": f"{metrics[k]:.6f}" for k in VERSION_METRICS
            if k in metrics}
    tags.update({"candidate": selected.name, "contract_version": CONTRACT_VERSION,
                 "data_sha256": fingerprint["data_sha256"], "run_id": run_id})
    registered_version = register_logged_model(store, info.model_uri, version, tags,
                                               "new version from crsrisk train")
    decision = _decide_champion(store, registered_version, result, valid, y_test, config)
    is_champion = version_by_alias(store, CHAMPION) == registered_version
    return RegisteredModel(run_id, registered_version,
                           f"models:/{store.model_name}/{registered_version}",
                           is_champion, decision)


def _small_data_records(result: TrainingResult, valid: pd.DataFrame,
                        min_cell: int) -> dict[str, plt.Figure]:
    """Log the sample-size table, optimism, internal-external validation, thresholds and
    instability (aggregates only)."""
    from crsrisk.modeling.uncertainty import instability_plot

    mlflow.log_dict({"design": result.design,
                     "sample_size": [c.as_dict() for c in result.sample_size]},
                    "sample_size.json")
    for c in result.sample_size:
        mlflow.log_metric(f"sample_size_min_n_{c.name}", c.size.parameter_n)
    mlflow.log_param("validation_design", result.design)
    if result.optimism is not None:
        mlflow.log_dict({"optimism": result.optimism.table.to_dict("records"),
                         "selections": result.optimism.selections,
                         "repeats": result.optimism.repeats}, "optimism.json")
        mlflow.log_metrics({f"corrected_{k}": v for k, v in result.optimism.corrected().items()
                            if np.isfinite(v)})
    ie = result.internal_external
    if ie is not None:
        tables = {by: private_internal_external(t, by, min_cell, valid["site"]).astype(object)
                  .where(lambda f: f.notna(), None).to_dict("records")
                  for by, t in ie.tables.items()}
        mlflow.log_dict({"tables": tables, "notes": ie.notes, "seconds": ie.seconds,
                         "min_rows": ie.min_rows, "min_cell": min_cell},
                        "internal_external.json")
    if result.thresholds is not None:
        thresholds = private_thresholds(result.thresholds, min_cell)
        mlflow.log_dict({"thresholds": thresholds.astype(object).where(thresholds.notna(), None)
                         .to_dict("records"), "min_cell": min_cell}, "tiers.json")
    ensemble = result.selected.model.uncertainty
    if ensemble is None or result.ensemble_risk is None:
        return {}
    mlflow.log_metric("instability_mape", ensemble.mape)
    model_risk = result.selected.model.risk(valid.loc[result.train_index])
    return {"plots/instability.png": instability_plot(model_risk, result.ensemble_risk)}


def _decide_champion(store, version, result, valid, y_test, config) -> str:
    metric = config.promotion.metric
    champion = version_by_alias(store, CHAMPION)
    if champion is None:
        set_alias(store, CHAMPION, version, "first champion: no champion existed")
        return f"version {version} is the first champion"
    if not len(result.test_index):
        return (f"version {version} stays challenger: it was developed on every row (bootstrap "
                "validation), so there are no held-out rows to compare it with champion "
                f"{champion} on; compare them with crsrisk evaluate on new rows, then promote")
    test = valid.loc[result.test_index]
    champion, champion_value = _champion_loss(store, test, y_test, metric)
    ours = result.selected.test_metrics[metric]
    if champion_value is None:
        return (f"version {version} stays challenger: champion {champion} was built for "
                "another contract version; compare them with crsrisk evaluate, then promote")
    margin = config.promotion.min_improvement
    if ours < champion_value - margin:
        set_alias(store, CHAMPION, version,
                  f"beat champion {champion} on this run's test rows: {metric} "
                  f"{ours:.4f} < {champion_value:.4f} - {margin}")
        return (f"version {version} is the new champion ({metric} {ours:.4f} against "
                f"{champion_value:.4f} for version {champion} on the same test rows)")
    return (f"version {version} stays challenger ({metric} {ours:.4f} against "
            f"{champion_value:.4f} for champion {champion}); promote it by hand with "
            f"crsrisk promote {version} --reason TEXT")
