"""The registered model as MLflow serves it: `mlflow.pyfunc.load_model(...).predict(frame)` takes
the frames pandas gives (CSV, Parquet, nullable, category, datetime), answers each row in order
(scored or rejected, with its problems), equals batch scoring, and is stored without a pickle of
the model; `mlflow.pyfunc.spark_udf` gives the same risks in local Spark."""

from __future__ import annotations

import json
import os
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest

import crsrisk
from crsrisk.contract.spec import BASELINE_COLUMNS, OUTCOME_NAMES
from crsrisk.errors import ContractError
from crsrisk.mlops.pyfunc import OUTPUT_COLUMNS

N = 40
SCORE_TEXT = ("risk_tier", "top_drivers", "planning", "model_name", "model_version")


@pytest.fixture(scope="module")
def pyfunc_model(trained):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", trained.uri)
        mlflow.set_registry_uri(trained.uri)
        return mlflow.pyfunc.load_model("models:/crs-severe@champion")


@pytest.fixture(scope="module")
def risk_model(trained):
    return trained.load()


@pytest.fixture(scope="module")
def typed(trained) -> pd.DataFrame:
    """Forty simulated patients as typed columns (no outcome), each row complete enough that its
    integer and boolean columns can take plain int64 and bool dtypes."""
    frame = trained.cohort.baseline.drop(columns=list(OUTCOME_NAMES))
    complete = frame[["ecog", "prior_lines"]].notna().all(axis=1)
    return frame[complete].head(N).reset_index(drop=True)


def assert_equals_batch(answers: pd.DataFrame, frame: pd.DataFrame, risk_model) -> None:
    """Scored rows equal `crsrisk.score` of the same frame, row for row."""
    expected, rejected = crsrisk.score(frame, risk_model)
    scored = answers[answers["status"] == "scored"].reset_index(drop=True)
    assert len(scored) == len(expected) == len(frame) - rejected["row_number"].nunique()
    assert scored["patient_id"].tolist() == expected["patient_id"].tolist()
    np.testing.assert_array_equal(scored["risk"].to_numpy(), expected["risk"].to_numpy())
    for column in SCORE_TEXT:
        assert scored[column].tolist() == expected[column].tolist(), column


def plain_dtypes(typed: pd.DataFrame) -> pd.DataFrame:
    """int64, bool, float, str, datetime: what a frame built in memory usually holds."""
    frame = typed.copy()
    for spec in BASELINE_COLUMNS:
        if spec.kind == "int":
            frame[spec.name] = frame[spec.name].astype("int64")
        elif spec.kind == "bool":
            frame[spec.name] = frame[spec.name].fillna(False).astype(bool)
    return frame


def test_read_csv_frame_is_scored_like_batch(pyfunc_model, risk_model, typed, tmp_path):
    path = tmp_path / "patients.csv"
    plain_dtypes(typed).to_csv(path, index=False)
    frame = pd.read_csv(path)
    assert frame["prior_lines"].dtype == "int64" and frame["hlh_history"].dtype == bool
    answers = pyfunc_model.predict(frame)
    assert list(answers.columns) == list(OUTPUT_COLUMNS)
    assert (answers["status"] == "scored").all() and answers["problems"].isna().all()
    assert answers["patient_id"].tolist() == frame["patient_id"].tolist()
    assert_equals_batch(answers, frame, risk_model)


def test_parquet_frame_is_scored_like_batch(pyfunc_model, risk_model, typed, tmp_path):
    path = tmp_path / "patients.parquet"
    typed.to_parquet(path)
    frame = pd.read_parquet(path)
    assert_equals_batch(pyfunc_model.predict(frame), frame, risk_model)


def test_nullable_dtypes_and_python_objects_give_the_same_answers(pyfunc_model, risk_model,
                                                                  typed):
    nullable = typed.copy()
    for spec in BASELINE_COLUMNS:
        if spec.kind in ("str", "category"):
            nullable[spec.name] = nullable[spec.name].astype("string")
        elif spec.kind == "float":
            nullable[spec.name] = nullable[spec.name].astype("Float64")
    assert nullable["ecog"].dtype == "Int64" and nullable["hlh_history"].dtype == "boolean"
    nullable.loc[0, ["ecog", "bulky_disease", "crp_mg_l"]] = pd.NA
    # As a JSON client's values arrive: Python ints, floats, bools, text and None in objects.
    objects = typed.astype(object).where(typed.notna(), None)
    objects.loc[0, ["ecog", "bulky_disease", "crp_mg_l"]] = None

    answers = pyfunc_model.predict(nullable)
    assert (answers["status"] == "scored").all()
    np.testing.assert_array_equal(answers["risk"], pyfunc_model.predict(objects)["risk"])
    assert_equals_batch(answers, nullable, risk_model)


def test_category_and_datetime_dtypes(pyfunc_model, risk_model, typed):
    frame = typed.copy()
    for spec in BASELINE_COLUMNS:
        if spec.kind in ("category", "str", "int"):
            frame[spec.name] = frame[spec.name].astype("category")
    assert pd.api.types.is_datetime64_any_dtype(frame["infusion_date"])
    answers = pyfunc_model.predict(frame)
    assert (answers["status"] == "scored").all()
    assert_equals_batch(answers, typed, risk_model)


def test_one_bad_row_among_many_is_answered_alone(pyfunc_model, risk_model, typed):
    frame = typed.copy()
    frame.loc[7, "age_years"] = 150.0
    frame.loc[12, "product"] = "foo-cel"
    answers = pyfunc_model.predict(frame)
    assert len(answers) == len(frame)
    assert answers["patient_id"].tolist() == frame["patient_id"].tolist()
    rejected = answers[answers["status"] == "rejected"]
    assert rejected.index.tolist() == [7, 12]
    assert rejected["risk"].isna().all() and rejected["risk_tier"].isna().all()
    assert json.loads(rejected.loc[7, "problems"]) == [
        {"column": "age_years", "rule": "must be between 0 and 110", "value": "150"}
    ]
    (problem,) = json.loads(rejected.loc[12, "problems"])
    assert problem["column"] == "product" and problem["value"] == "foo-cel"
    assert_equals_batch(answers, frame, risk_model)


def test_a_blanked_value_is_named_in_its_scored_rows_problems(pyfunc_model, risk_model, typed):
    """With no row rejected too: the blanked value was once said only beside a rejected row."""
    frame = typed.head(5).copy()
    frame.loc[2, "crp_mg_l"] = 5000.0  # implausible: scored as missing, and said so
    answers = pyfunc_model.predict(frame)
    assert (answers["status"] == "scored").all()
    assert json.loads(answers.loc[2, "problems"]) == [
        {"column": "crp_mg_l", "rule": "must be between 0 and 1000", "value": "5000"}
    ]
    assert answers["problems"].drop(index=2).isna().all()
    expected, rejected = crsrisk.score(frame, risk_model)
    assert rejected["action"].tolist() == ["blanked"]
    np.testing.assert_array_equal(answers["risk"].to_numpy(), expected["risk"].to_numpy())


def test_every_row_rejected_is_still_answered_per_row(pyfunc_model, typed):
    frame = typed.head(3).assign(age_years=-1.0)
    answers = pyfunc_model.predict(frame)
    assert answers["status"].tolist() == ["rejected"] * 3
    assert answers["risk"].isna().all()


def test_drivers_param(pyfunc_model, typed):
    with_drivers = pyfunc_model.predict(typed.head(5))
    without = pyfunc_model.predict(typed.head(5), params={"drivers": False})
    assert with_drivers["top_drivers"].notna().all() and without["top_drivers"].isna().all()
    np.testing.assert_array_equal(with_drivers["risk"], without["risk"])


def test_records_are_read_as_a_table(pyfunc_model, typed):
    records = json.loads(typed.head(2).to_json(orient="records", date_format="iso"))
    answers = pyfunc_model.predict(records)
    assert answers["status"].tolist() == ["scored", "scored"]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda f: f.drop(columns="product"), "lacks required column(s) product"),
        (lambda f: f.head(0), "has no data rows"),
        (lambda f: [1, 2, 3], "takes a table"),
        (lambda f: "SIM-1,60", "takes a table"),
    ],
    ids=["required column absent", "no rows", "list of numbers", "text"],
)
def test_unusable_input_is_refused_without_echoing_rows(pyfunc_model, typed, make, words):
    with pytest.raises(ContractError) as refused:
        pyfunc_model.predict(make(typed))
    message = str(refused.value)
    assert words in message
    assert not any(pid in message for pid in typed["patient_id"])


def test_signature_documents_output_and_params_and_never_refuses_input(pyfunc_model):
    """The choice pinned: no input schema (MLflow 3.17 would refuse int64, bool, Int64 or
    category against typed columns, and converts every cell in Python for AnyType); the input
    columns are documented in the model's metadata and input example instead."""
    meta = pyfunc_model.metadata
    assert meta.get_input_schema() is None
    assert meta.get_output_schema().input_names() == list(OUTPUT_COLUMNS)
    assert meta.get_params_schema().to_dict() == [
        {"name": "drivers", "type": "boolean", "default": True, "shape": None},
        {"name": "strict", "type": "boolean", "default": False, "shape": None},
    ]
    documented = meta.metadata
    assert documented["required_columns"] == [s.name for s in BASELINE_COLUMNS if s.required]
    assert set(documented["required_columns"] + documented["optional_columns"]) == {
        s.name for s in BASELINE_COLUMNS
    }


def test_registered_model_holds_no_pickle_of_the_python_model(trained):
    """Models from code: the PythonModel is stored as its source file, not cloudpickled."""
    models = trained.folder / "mlartifacts"
    mlmodels = list(models.rglob("MLmodel"))
    assert mlmodels, f"no logged model under {models}"
    for mlmodel in mlmodels:
        folder = mlmodel.parent
        assert not list(folder.rglob("*.pkl")), sorted(folder.rglob("*"))
        assert (folder / "_pyfunc_code.py").is_file()
        assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel.read_text()


# ------------------------------------------------------------------------------------------
# mlflow.pyfunc.spark_udf
# ------------------------------------------------------------------------------------------


def _spark_skip_reason() -> str | None:
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed: pip install -e '.[spark]'"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Java is not installed (Spark needs Java 17+)"
    return None


@pytest.mark.skipif(_spark_skip_reason() is not None, reason=str(_spark_skip_reason()))
def test_spark_udf_gives_the_pandas_engine_risks(trained, risk_model, monkeypatch):
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from crsrisk.scoring.spark import spark_session

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    mlflow.set_registry_uri(trained.uri)
    frame = trained.cohort.baseline.drop(columns=list(OUTCOME_NAMES)).head(300).copy()
    frame.loc[5, "age_years"] = 150.0
    frame["infusion_date"] = frame["infusion_date"].dt.strftime("%Y-%m-%d")
    owned = SparkSession.getActiveSession() is None
    spark = spark_session("local[2]")
    try:
        sdf = spark.createDataFrame(frame.astype(object).where(frame.notna(), None))
        udf = mlflow.pyfunc.spark_udf(spark, "models:/crs-severe@champion", env_manager="local")
        got = (sdf.withColumn("answer", udf(F.struct(*sdf.columns)))
               .select("answer.*").toPandas())
    finally:
        if owned:
            spark.stop()
    expected, rejected = crsrisk.score(frame, risk_model)
    assert got["patient_id"].tolist() == frame["patient_id"].tolist()
    assert got.loc[5, "status"] == "rejected" and pd.isna(got.loc[5, "risk"])
    assert rejected["row_number"].tolist() == [6]
    scored = got[got["status"] == "scored"].reset_index(drop=True)
    assert scored["patient_id"].tolist() == expected["patient_id"].tolist()
    np.testing.assert_allclose(scored["risk"], expected["risk"], rtol=0, atol=1e-12)
    assert scored["top_drivers"].tolist() == expected["top_drivers"].tolist()


def test_xgboost_reads_the_code_matrix_as_it_reads_the_frame(risk_model, typed):
    """The float matrix of category codes that scoring hands XGBoost gives exactly the margins,
    TreeSHAP contributions and interval spreads of XGBoost reading the DataFrame itself."""
    import xgboost as xgb

    from crsrisk.contract.validate import validate

    design = risk_model.design(validate(typed).valid)
    booster = risk_model.adapter.booster
    np.testing.assert_array_equal(risk_model.adapter.margin(design),
                                  booster.inplace_predict(design, predict_type="margin"))
    own = booster.predict(xgb.DMatrix(design, enable_categorical=True), pred_contribs=True)
    contributions = risk_model.adapter.contributions(design)
    np.testing.assert_array_equal(contributions.margin, own.sum(axis=1))
    spread = risk_model.uncertainty.spread(design, None)
    emulator = risk_model.uncertainty._booster
    np.testing.assert_array_equal(spread, np.exp(emulator.inplace_predict(design)))
    # A matrix with its columns in another order is put back in the booster's order.
    np.testing.assert_array_equal(risk_model.adapter.margin(design[design.columns[::-1]]),
                                  risk_model.adapter.margin(design))
