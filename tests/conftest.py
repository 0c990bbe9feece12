"""Shared fixtures: tiny contract tables built inline."""

from __future__ import annotations

import pandas as pd
import pytest

VALID_ROWS = [
    # A CD28 CAR-T with costim left for the product table to fill.
    dict(patient_id="P1", site="A", infusion_date="2021-03-04", age_years="61", sex="F",
         weight_kg="70", ecog="1", diagnosis="LBCL", therapy_class="CAR-T", product="axi-cel",
         costim_domain="", cell_dose_1e6_per_kg="2", lymphodepletion="flu_cy", prior_lines="2",
         bridging_therapy="true", ldh_u_l="310", spd_cm2="40", marrow_blasts_pct="",
         marrow_plasma_cells_pct="", bulky_disease="false", crp_mg_l="25",
         ferritin_ng_ml="800", platelets_1e9_l="150", anc_1e9_l="3.1", hemoglobin_g_dl="11",
         creatinine_mg_dl="0.9", il6_pg_ml="", prior_autoimmune_disease="no",
         hlh_history="no"),
    # A bispecific: no costim, no cell dose.
    dict(patient_id="P2", site="B", infusion_date="2024-01-15", age_years="70", sex="M",
         weight_kg="82", ecog="0", diagnosis="MM", therapy_class="bispecific",
         product="teclistamab", costim_domain="", cell_dose_1e6_per_kg="", lymphodepletion="none",
         prior_lines="5", bridging_therapy="", ldh_u_l="180", spd_cm2="", marrow_blasts_pct="",
         marrow_plasma_cells_pct="30", bulky_disease="", crp_mg_l="4", ferritin_ng_ml="300",
         platelets_1e9_l="190", anc_1e9_l="2.5", hemoglobin_g_dl="10.5",
         creatinine_mg_dl="1.1", il6_pg_ml="6", prior_autoimmune_disease="", hlh_history=""),
    # An other_car_t with its costim given, B-ALL burden.
    dict(patient_id="P3", site="", infusion_date="2019-07-30", age_years="24", sex="",
         weight_kg="", ecog="", diagnosis="B-ALL", therapy_class="CAR-T", product="other_car_t",
         costim_domain="4-1BB", cell_dose_1e6_per_kg="1", lymphodepletion="flu_cy",
         prior_lines="", bridging_therapy="", ldh_u_l="", spd_cm2="", marrow_blasts_pct="40",
         marrow_plasma_cells_pct="", bulky_disease="", crp_mg_l="6", ferritin_ng_ml="",
         platelets_1e9_l="80", anc_1e9_l="", hemoglobin_g_dl="", creatinine_mg_dl="0.7",
         il6_pg_ml="", prior_autoimmune_disease="", hlh_history="yes"),
]


def baseline_frame(n_copies: int = 1, **overrides: list[str]) -> pd.DataFrame:
    """The three valid rows (repeated ``n_copies`` times with unique ids), as text cells."""
    rows = []
    for copy in range(n_copies):
        for row in VALID_ROWS:
            rows.append({**row, "patient_id": f"{row['patient_id']}-{copy}"})
    df = pd.DataFrame(rows, dtype="str")
    for column, values in overrides.items():
        df[column] = pd.Series(values, dtype="str")
    return df


@pytest.fixture
def baseline() -> pd.DataFrame:
    return baseline_frame()


# ------------------------------------------------------------------------------------------
# A small trained, registered model shared by the scoring, export, serving and report tests.
# ------------------------------------------------------------------------------------------

import os  # noqa: E402
import shutil  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

MLFLOW_STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True, scope="session")
def _no_ambient_tracking_store():
    """Tests never write to a tracking store or registry named by the environment."""
    saved = {name: os.environ.pop(name, None) for name in MLFLOW_STORE_VARIABLES}
    yield
    for name, value in saved.items():
        if value is not None:
            os.environ[name] = value


@pytest.fixture(autouse=True, scope="session")
def _per_user_store_in_a_temporary_folder(tmp_path_factory):
    """The per-user default store (~/.crsrisk) of every test is a temporary folder."""
    saved = os.environ.get("CRSRISK_HOME")
    os.environ["CRSRISK_HOME"] = str(tmp_path_factory.mktemp("crsrisk-home"))
    yield
    if saved is None:
        os.environ.pop("CRSRISK_HOME", None)
    else:
        os.environ["CRSRISK_HOME"] = saved


@pytest.fixture(autouse=True)
def _store_variables_restored():
    """mlflow.set_tracking_uri / set_registry_uri export these variables behind monkeypatch's
    back; put them back after every test so that no test inherits another's store."""
    saved = {name: os.environ.get(name) for name in MLFLOW_STORE_VARIABLES}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def fast_config(folder: Path, **overrides):
    """A training config that runs in seconds, tracking into ``folder``."""
    from crsrisk.config import load_train_config

    config = load_train_config()
    settings = {
        "candidates": ("m_easix", "logistic", "xgboost"),
        "cv": config.cv.model_copy(update={"folds": 3}),
        "search": config.search.model_copy(
            update={"xgboost_trials": 1, "logistic_c": (0.3,), "logistic_splines": (False,)}
        ),
        "tracking": config.tracking.model_copy(
            update={"uri": f"sqlite:///{folder / 'mlflow.db'}",
                    "artifact_root": str(folder / "mlartifacts")}
        ),
        # The split design and every candidate, as before sample-size checks (tests of those
        # set them); few bootstrap refits for the intervals.
        "validation": config.validation.model_copy(update={"design": "split"}),
        "sample_size": config.sample_size.model_copy(update={"skip_unsupported": False}),
        "uncertainty": config.uncertainty.model_copy(update={"models": 8}),
        **overrides,
    }
    return config.model_copy(update=settings)


@dataclass(frozen=True)
class Trained:
    """A registered champion trained on a simulated cohort."""

    uri: str  # tracking URI (sqlite) to set as MLFLOW_TRACKING_URI
    folder: Path  # holds mlflow.db and mlartifacts/
    model_uri: str  # models:/crs-severe/1
    cohort: object  # crsrisk.simulate.cohort.SimulatedCohort used for training
    config: object

    def load(self):
        """A fresh RiskModel of the champion, loaded from its store."""
        from crsrisk.mlops.loading import load_model

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_URI", self.uri)
            return load_model(self.model_uri)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """XGBoost trained on 2,000 simulated patients and registered as champion (version 1)."""
    from crsrisk.contract.grading import resolve_labels
    from crsrisk.contract.validate import validate
    from crsrisk.mlops.registry import connect
    from crsrisk.mlops.tracking import log_and_register
    from crsrisk.modeling.train import train_models
    from crsrisk.simulate.cohort import simulate_cohort

    folder = tmp_path_factory.mktemp("registry")
    config = fast_config(folder, candidates=("xgboost",))
    cohort = simulate_cohort(2000, seed=11)
    valid = validate(cohort.baseline).valid
    labels = resolve_labels(valid, None)
    result = train_models(valid, labels.severe, config)
    for name in MLFLOW_STORE_VARIABLES:  # the config's own store, whatever ran before
        os.environ.pop(name, None)
    store = connect(config.tracking)
    registered = log_and_register(store, result, config, valid, labels.severe,
                                  {"input_file": "simulated", "mapping_fingerprint": "none"})
    return Trained(store.uri, folder, registered.model_uri, cohort, config)


def private_store(trained: Trained, folder: Path) -> str:
    """A copy of the shared registry in ``folder``, so that new runs and versions stay out of
    the original; its tracking URI."""
    shutil.copy(trained.folder / "mlflow.db", folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def use_store(folder: Path, uri: str, monkeypatch: pytest.MonkeyPatch):
    """Point MLflow and the command line at the store ``uri`` and work in ``folder``.

    Returns the store's ``MlflowClient``.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(folder)
    # mlflow keeps the last registry URI set in this process (the CLI sets it once per process).
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, uri)


def run_cli(*args: object):
    """``crsrisk ARGS`` in this process; whatever it says, never with a traceback."""
    from typer.testing import CliRunner

    from crsrisk.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


# Modules whose tests train real models, start servers or Spark (seconds to minutes each).
SLOW_MODULES = frozenset({
    "test_train", "test_tracking", "test_small_cohorts", "test_spark", "test_privacy",
    "test_training_overlap", "test_evaluation", "test_cli_evaluation", "test_report",
})


def pytest_collection_modifyitems(config, items):
    """Mark as slow every test that trains a model (the `trained` fixture or a slow module), so
    that ``pytest -m "not slow"`` runs the rest in about two minutes."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()) or item.module.__name__.split(".")[
            -1
        ] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
