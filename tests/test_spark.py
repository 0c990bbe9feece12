"""The Spark engine: row for row the pandas engine's scores and rejected rows, same files and
exit codes. One local[2] session serves the whole module (Spark starts slowly)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed: pip install -e '.[spark]'")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip(
        "Java is not installed (the Spark engine needs Java 17+): Spark tests skipped",
        allow_module_level=True,
    )

from crsrisk.contract.spec import OUTCOME_NAMES  # noqa: E402
from crsrisk.errors import ContractError  # noqa: E402
from crsrisk.io import read_table  # noqa: E402

CHUNK = 1_000  # small chunks, so that 3,000 rows cross chunk boundaries


@pytest.fixture(scope="session")
def spark():
    from crsrisk.scoring.spark import spark_session

    session = spark_session(
        "local[2]",
        conf={
            "spark.sql.shuffle.partitions": "4",
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def risk_model(trained):
    """The registered champion, loaded once (both engines also take a loaded RiskModel)."""
    return trained.load()


@pytest.fixture(scope="module")
def typed() -> pd.DataFrame:
    """3,000 simulated patients, typed, with an extra column and a few broken rows."""
    from crsrisk.simulate.cohort import simulate_cohort

    frame = simulate_cohort(3000, seed=5).baseline.drop(columns=list(OUTCOME_NAMES))
    frame["study_arm"] = np.where(np.arange(len(frame)) % 3, "A, open-label", "B")
    frame.loc[3, "age_years"] = 150.0
    frame.loc[10, "product"] = "foo-cel"
    frame.loc[20, "patient_id"] = frame.loc[19, "patient_id"]  # duplicate within a chunk
    frame.loc[25, "patient_id"] = None
    frame.loc[999, "ferritin_ng_ml"] = -3.0  # last row of the first chunk
    frame.loc[1000, "therapy_class"] = "bispecific"  # first of the second: axi-cel or not
    frame.loc[2999, "infusion_date"] = pd.Timestamp("2099-01-01")
    return frame


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            out[name] = col.dt.strftime("%Y-%m-%d")
        else:
            out[name] = col.astype("str").where(col.notna())
    return pd.DataFrame(out, dtype=object)


@pytest.fixture(scope="module")
def text(typed) -> pd.DataFrame:
    """The same patients as CSV text, with problems only text can have."""
    frame = as_text(typed)
    frame.loc[1500, "crp_mg_l"] = "high"
    frame.loc[1501, "ecog"] = "1.5"
    frame.loc[1502, "site"] = "=cmd()"
    frame.loc[1503, "weight_kg"] = "NA"  # pandas' missing-value word: missing, not rejected
    frame.loc[1504, "ldh_u_l"] = "  250"  # leading spaces are skipped
    frame.loc[1505, "study_arm"] = "line one\nline two"  # a quoted line break
    frame.loc[1506, "sex"] = ""
    return frame


def assert_same_scores(pandas_out, spark_out) -> None:
    a, b = read_table(pandas_out), read_table(spark_out)
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b) and a["patient_id"].tolist() == b["patient_id"].tolist()
    risk_a, risk_b = a["risk"].astype("float64"), b["risk"].astype("float64")
    assert np.abs(risk_a - risk_b).max() <= 1e-9
    rest = [c for c in a.columns if c != "risk"]
    pd.testing.assert_frame_equal(a[rest], b[rest])  # tier, drivers, planning, extras


def assert_same_rejected(pandas_rejected, spark_rejected) -> None:
    a, b = read_table(pandas_rejected), read_table(spark_rejected)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)


def both_engines(tmp_path, source, risk_model, out_ext: str, **options):
    from crsrisk.scoring.batch import score_file
    from crsrisk.scoring.spark import score_file_spark

    paths = {
        e: (tmp_path / f"{e}.{out_ext}", tmp_path / f"{e}.rejected.csv")
        for e in ("pandas", "spark")
    }
    summaries = {
        "pandas": score_file(
            source,
            paths["pandas"][0],
            model=risk_model,
            rejected_path=paths["pandas"][1],
            chunk_size=CHUNK,
            progress=False,
            **options,
        ),
        "spark": score_file_spark(
            source,
            paths["spark"][0],
            model=risk_model,
            rejected_path=paths["spark"][1],
            master="local[2]",
            chunk_size=CHUNK,
            **{"mapping": None, **options},
        ),
    }
    return paths, summaries


def assert_same_summary(summaries) -> None:
    a, b = summaries["pandas"], summaries["spark"]
    assert (a.n_read, a.n_scored, a.n_rejected, a.n_blanked, a.tiers, a.class_tiers,
            a.warnings, a.model) == (
        b.n_read,
        b.n_scored,
        b.n_rejected,
        b.n_blanked,
        b.tiers,
        b.class_tiers,
        b.warnings,
        b.model,
    )


def test_csv_scores_and_rejected_rows_equal_the_pandas_engine(tmp_path, spark, risk_model, text):
    source = tmp_path / "patients.csv"
    text.to_csv(source, index=False)
    paths, summaries = both_engines(tmp_path, source, risk_model, "parquet", drivers=True)
    assert_same_scores(paths["pandas"][0], paths["spark"][0])
    assert_same_rejected(paths["pandas"][1], paths["spark"][1])
    assert_same_summary(summaries)
    rejected = read_table(paths["spark"][1])
    assert {4, 11, 21, 26, 1000, 1001, 1501, 1502, 1503, 3000} <= set(
        rejected["row_number"].astype(int)
    )
    assert 1504 not in set(rejected["row_number"].astype(int))  # "NA" is missing, not invalid
    assert summaries["spark"].n_read == 3000
    scores = read_table(paths["spark"][0])
    assert "line one\nline two" in set(scores["study_arm"])


def test_parquet_scores_and_rejected_rows_equal_the_pandas_engine(
    tmp_path, spark, risk_model, typed
):
    source = tmp_path / "patients.parquet"
    typed.to_parquet(source, index=False)  # nanosecond timestamps, nullable ints and booleans
    paths, summaries = both_engines(tmp_path, source, risk_model, "csv", drivers=False)
    assert_same_scores(paths["pandas"][0], paths["spark"][0])
    assert_same_rejected(paths["pandas"][1], paths["spark"][1])
    assert_same_summary(summaries)
    assert read_table(paths["spark"][0])["top_drivers"].isna().all()


def test_score_spark_takes_a_spark_dataframe(spark, risk_model, text):
    from crsrisk.scoring.core import score
    from crsrisk.scoring.spark import score_spark

    sample = text.iloc[:400]
    frame = spark.createDataFrame(sample.astype(object).where(sample.notna(), None))
    scores, rejected = score_spark(frame, risk_model, drivers=True)
    expected_scores, expected_rejected = score(sample.reset_index(drop=True), risk_model)
    got = scores.toPandas()
    assert got["patient_id"].tolist() == expected_scores["patient_id"].tolist()
    assert np.abs(got["risk"] - expected_scores["risk"]).max() <= 1e-9
    assert got["top_drivers"].tolist() == expected_scores["top_drivers"].tolist()
    assert got["risk_tier"].tolist() == expected_scores["risk_tier"].tolist()
    got_rejected = rejected.toPandas()
    assert got_rejected["row_number"].tolist() == expected_rejected["row_number"].tolist()
    assert got_rejected["check"].tolist() == expected_rejected["check"].tolist()


def spark_score_without_drivers(source, out, risk_model):
    from crsrisk.scoring.spark import score_file_spark

    return score_file_spark(source, out, model=risk_model, rejected_path=None, drivers=False,
                            master="local[2]", mapping=None)


def test_unusable_inputs_are_refused_with_one_sentence(tmp_path, spark, risk_model, text):
    def run(source):
        return spark_score_without_drivers(source, tmp_path / "out.csv", risk_model)

    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(text.columns) + "\n")
    with pytest.raises(ContractError, match="no data rows"):
        run(header_only)
    no_product = tmp_path / "no_product.csv"
    text.drop(columns="product").iloc[:5].to_csv(no_product, index=False)
    with pytest.raises(ContractError, match="lacks required column"):
        run(no_product)
    too_wide = tmp_path / "too_wide.csv"
    lines = text.iloc[:5].to_csv(index=False).splitlines()
    lines[3] += ",surplus"
    too_wide.write_text("\n".join(lines) + "\n")
    with pytest.raises(ContractError, match="could not be read as csv"):
        run(too_wide)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(text.iloc[:5].to_csv(index=False).replace("B", "\xe9").encode("latin-1"))
    with pytest.raises(ContractError, match="not UTF-8"):
        run(latin1)
    assert not (tmp_path / "out.csv").exists()


def test_every_row_rejected_writes_only_the_rejected_file(tmp_path, spark, risk_model, text):
    source = tmp_path / "bad.csv"
    text.iloc[:30].assign(age_years="200").to_csv(source, index=False)
    (tmp_path / "out.csv").write_text("yesterday's scores")  # must not pass for today's
    with pytest.raises(ContractError, match="Every row .* earlier run, was removed"):
        spark_score_without_drivers(source, tmp_path / "out.csv", risk_model)
    assert not (tmp_path / "out.csv").exists()
    rejected = read_table(tmp_path / "out.rejected.csv")
    assert sorted(set(rejected["row_number"].astype(int))) == list(range(1, 31))


def test_cli_engine_spark_exit_codes(tmp_path, spark, trained, text, monkeypatch):
    from typer.testing import CliRunner

    from crsrisk.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    clean = tmp_path / "clean.csv"
    text.iloc[100:300].to_csv(clean, index=False)
    dirty = tmp_path / "dirty.csv"
    text.iloc[:40].to_csv(dirty, index=False)
    runner = CliRunner()

    def score(source, out):
        return runner.invoke(
            app,
            [
                "score",
                str(source),
                "--out",
                str(tmp_path / out),
                "--model",
                trained.model_uri,
                "--engine",
                "spark",
                "--master",
                "local[2]",
            ],
        )

    result = score(clean, "clean.scores.csv")
    assert result.exit_code == 0, result.output
    assert len(read_table(tmp_path / "clean.scores.csv")) == 200
    result = score(dirty, "dirty.scores.csv")
    assert result.exit_code == 1, result.output
    assert (tmp_path / "dirty.scores.rejected.csv").is_file()
    result = score(tmp_path / "missing.csv", "missing.scores.csv")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_site_mapping_is_applied_per_chunk_as_in_the_pandas_engine(
    tmp_path, spark, risk_model, text
):
    mapping = tmp_path / "site.yaml"
    mapping.write_text(
        "rename: {MRN_pseudo: patient_id, CRP: crp_mg_l, CAR_dose_total: cell_dose_1e6_per_kg}\n"
        "recode: {sex: {female: F, male: M}}\n"
        "units: {crp_mg_l: mg/dL, cell_dose_1e6_per_kg: total_1e6_cells}\n"
    )
    site = text.iloc[:1500].rename(
        columns={
            "patient_id": "MRN_pseudo",
            "crp_mg_l": "CRP",
            "cell_dose_1e6_per_kg": "CAR_dose_total",
        }
    )
    site["sex"] = site["sex"].replace({"F": "female", "M": "male"})
    site.loc[7, "weight_kg"] = None  # a total dose without a weight cannot be converted
    source = tmp_path / "site.csv"
    site.to_csv(source, index=False)
    paths, summaries = both_engines(
        tmp_path, source, risk_model, "csv", drivers=False, mapping=mapping
    )
    assert_same_scores(paths["pandas"][0], paths["spark"][0])
    assert_same_rejected(paths["pandas"][1], paths["spark"][1])
    assert_same_summary(summaries)


@pytest.mark.parametrize("strict", [False, True], ids=["blanked", "strict"])
def test_an_implausible_lab_is_treated_alike_by_both_engines(
    tmp_path, spark, risk_model, text, strict
):
    frame = text.iloc[:1200].copy()
    frame.loc[5, "hemoglobin_g_dl"] = "0.1"  # an entry error in an optional laboratory column
    frame.loc[1100, "ldh_u_l"] = "8"
    source = tmp_path / "labs.csv"
    frame.to_csv(source, index=False)
    paths, summaries = both_engines(tmp_path, source, risk_model, "csv", drivers=False,
                                    strict=strict)
    assert_same_scores(paths["pandas"][0], paths["spark"][0])
    assert_same_rejected(paths["pandas"][1], paths["spark"][1])
    assert_same_summary(summaries)
    rejected = read_table(paths["spark"][1]).set_index(["row_number", "column"])["action"]
    action = "rejected" if strict else "blanked"
    assert rejected.loc[("6", "hemoglobin_g_dl")] == action
    assert rejected.loc[("1101", "ldh_u_l")] == action
    scored = read_table(paths["spark"][0])["patient_id"].tolist()
    assert (frame.loc[5, "patient_id"] in scored) is not strict
    blanked = int((rejected == "blanked").sum())  # with the fixture's own implausible values
    assert summaries["spark"].n_blanked == blanked and (blanked == 0) is strict


def test_a_semicolon_csv_with_decimal_commas_scores_as_in_the_pandas_engine(
    tmp_path, spark, risk_model, text
):
    frame = text.iloc[:300].copy()
    for column in ("crp_mg_l", "weight_kg", "hemoglobin_g_dl"):
        frame[column] = frame[column].str.replace(".", ",", regex=False)
    source = tmp_path / "site.csv"
    frame.to_csv(source, index=False, sep=";")
    paths, summaries = both_engines(tmp_path, source, risk_model, "csv", drivers=False)
    assert_same_scores(paths["pandas"][0], paths["spark"][0])
    assert_same_summary(summaries)
    plain = tmp_path / "plain.csv"
    text.iloc[:300].to_csv(plain, index=False)
    from crsrisk.scoring.batch import score_file

    score_file(plain, tmp_path / "plain.scores.csv", model=risk_model, drivers=False,
               progress=False)
    assert_same_scores(tmp_path / "plain.scores.csv", paths["spark"][0])


def test_excel_and_sheet_are_refused_in_one_sentence(tmp_path, risk_model, text):
    from crsrisk.scoring.spark import score_file_spark

    workbook = tmp_path / "export.xlsx"
    text.iloc[:5].to_excel(workbook, index=False)
    csv = tmp_path / "in.csv"
    text.iloc[:5].to_csv(csv, index=False)
    for source, sheet, words in (
        (workbook, None, "is an Excel workbook: score it with --engine pandas"),
        (workbook, "Sheet1", "is an Excel workbook: score it with --engine pandas"),
        (csv, "Sheet1", "--sheet applies to Excel files only"),
    ):
        with pytest.raises(ContractError, match=words):
            score_file_spark(source, tmp_path / "s.csv", model=risk_model, rejected_path=None,
                             drivers=False, master="local[2]", mapping=None, sheet=sheet)
        assert not (tmp_path / "s.csv").exists()


def test_cli_prints_the_tier_counts_per_therapy_class_of_the_score_table(
    tmp_path, spark, trained, text, monkeypatch
):
    from typer.testing import CliRunner

    from crsrisk.cli import app
    from tests.test_cli_scoring import printed_tier_counts, score_table_counts

    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    frame = text.iloc[900:1200]  # CAR-T and bispecific patients, a few rows rejected
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, [
        "score", str(source), "--out", str(out), "--model", trained.model_uri,
        "--engine", "spark", "--master", "local[2]", "--no-drivers", "--chunk-size", "100",
    ])
    assert result.exit_code in (0, 1), result.output
    printed = printed_tier_counts(result.output)
    table = read_table(out)
    assert {k: n for k, n in printed.items() if n and k[0] != "total"} == score_table_counts(
        table, frame.reset_index(drop=True).astype({"patient_id": "str"}))
    assert sum(n for (c, _), n in printed.items() if c == "total") == len(table)
