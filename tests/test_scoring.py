"""Batch scoring: every row scored or rejected, in order, the same answer for any chunk size.

| property                                   | test                                               |
|--------------------------------------------|----------------------------------------------------|
| n_read = n_scored + n_rejected, any mix    | test_random_mixes_never_crash_and_account_for_all  |
| answer independent of chunk size          | (same) and test_repeated_id_across_chunks_...      |
| input order kept, extra columns untouched  | test_file_scores_equal_in_memory_scores, ...extras |
| outputs atomic, nothing partial on failure | test_failure_mid_run_leaves_no_output, ...stale    |
| planning text per tier, risk monotone      | test_tiers_planning_and_monotone_risk              |
| model problems in one sentence             | test_model_errors_are_one_sentence                 |
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crsrisk
from crsrisk.contract.spec import CONTRACT_VERSION
from crsrisk.errors import ContractError
from crsrisk.io import read_table, write_table
from crsrisk.mlops.loading import ModelError, load_model
from crsrisk.modeling.riskmodel import SCORE_COLUMNS, TIERS
from crsrisk.scoring.batch import score_file
from crsrisk.scoring.core import score, score_frame
from tests.conftest import baseline_frame


@pytest.fixture(scope="module")
def model(trained):
    return trained.load()


@pytest.fixture(scope="module")
def cohort_text(trained) -> pd.DataFrame:
    """400 simulated patients as CSV delivers them (text cells), outcome columns dropped."""
    baseline = trained.cohort.baseline.head(400).drop(columns=["crs_max_grade",
                                                               "crs_grading_scale"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cohort.csv"
        baseline.to_csv(path, index=False)
        return read_table(path)


def rows_of(rejected: pd.DataFrame) -> set[int]:
    return set(rejected["row_number"].astype(int))


# ------------------------------------------------------------------------------------------
# Equivalence and order
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_scores_equal_in_memory_scores(tmp_path, model, cohort_text, suffix):
    table = cohort_text.assign(study_arm=[f"arm {i % 3}" for i in range(len(cohort_text))])
    table.loc[[5, 77], "age_years"] = "150"
    source = tmp_path / f"in{suffix}"
    write_table(table, source)
    out, rejected = tmp_path / f"scores{suffix}", tmp_path / "rejected.csv"

    summary = score_file(source, out, model=model, rejected_path=rejected, chunk_size=64)
    expected, expected_rejected = score(read_table(source), model)

    got = read_table(out)
    assert list(got.columns) == [*SCORE_COLUMNS, "study_arm"]
    assert got["patient_id"].tolist() == expected["patient_id"].tolist()  # input order
    np.testing.assert_allclose(got["risk"].astype(float), expected["risk"], rtol=0, atol=1e-12)
    for column in ("risk_tier", "top_drivers", "planning", "study_arm"):
        assert got[column].tolist() == expected[column].tolist()
    assert rows_of(read_table(rejected)) == rows_of(expected_rejected) == {6, 78}
    assert (summary.n_read, summary.n_scored, summary.n_rejected) == (400, 398, 2)
    assert sum(summary.tiers.values()) == 398


def test_top_level_score_is_lazy_and_is_scoring_score():
    code = ("import sys, crsrisk; assert 'pandas' not in sys.modules; "
            "from crsrisk.scoring.core import score; assert crsrisk.score is score")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert crsrisk.score is score


def test_extra_columns_keep_their_values_and_parquet_types(tmp_path, model, trained):
    baseline = trained.cohort.baseline.head(30).reset_index(drop=True)
    baseline["record_key"] = pd.array([2**60 + i for i in range(30)], dtype="Int64")
    baseline.loc[[3, 25], "record_key"] = pd.NA  # a gap in the second chunk only
    baseline["note"] = ["=SUM(A1)" if i == 2 else f"n{i}" for i in range(30)]
    source, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    write_table(baseline, source)

    score_file(source, out, model=model, chunk_size=10)

    got = pd.read_parquet(out, dtype_backend="numpy_nullable")
    assert got["record_key"].tolist() == baseline["record_key"].tolist()  # exact, no float
    assert got["note"].tolist() == baseline["note"].tolist()  # Parquet: no CSV escaping


def test_csv_extras_untouched_except_formulas(tmp_path, model):
    table = baseline_frame(1).assign(delta=["-3", "+1.5", "=cmd|' /C calc'!A0"])
    source, out = tmp_path / "in.csv", tmp_path / "s.csv"
    table.to_csv(source, index=False)
    score_file(source, out, model=model)
    # Numbers keep their sign; a formula is defused for spreadsheets with a leading quote.
    assert read_table(out)["delta"].tolist() == ["-3", "+1.5", "'=cmd|' /C calc'!A0"]


# ------------------------------------------------------------------------------------------
# Chunk-size independence: patient_ids repeated across chunks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 100])
def test_repeated_id_across_chunks_rejects_every_copy(tmp_path, model, chunk_size):
    table = baseline_frame(4)  # 12 rows
    table.loc[10, "patient_id"] = table.loc[1, "patient_id"]  # far apart: other chunks
    table.loc[8, "patient_id"] = " " + table.loc[0, "patient_id"]  # the same id once stripped
    source, out, rejected = tmp_path / "in.csv", tmp_path / "s.csv", tmp_path / "r.csv"
    table.to_csv(source, index=False)

    summary = score_file(source, out, model=model, rejected_path=rejected,
                         chunk_size=chunk_size)

    reference = score(read_table(source), model)
    got_rejected = read_table(rejected)
    assert rows_of(got_rejected) == {1, 2, 9, 11}
    pd.testing.assert_frame_equal(got_rejected, read_table(_written(tmp_path, reference[1])))
    assert read_table(out)["patient_id"].tolist() == reference[0]["patient_id"].tolist()
    assert summary.n_read == summary.n_scored + summary.n_rejected == 12


def _written(folder: Path, frame: pd.DataFrame) -> Path:
    path = folder / "reference.csv"
    write_table(frame, path)
    return path


# ------------------------------------------------------------------------------------------
# Property: random mixes of valid and invalid rows, any chunk size
# ------------------------------------------------------------------------------------------

CORRUPTIONS = {
    "out of range": ("age_years", "150"),
    "wrong type": ("crp_mg_l", "high"),
    "unknown product": ("product", "Yescarta"),
    "missing required": ("infusion_date", ""),
    "formula": ("site", "=HYPERLINK(1)"),
    "class mismatch": ("product", "glofitamab"),
    "future date": ("infusion_date", "2999-01-01"),
    "not a bool": ("hlh_history", "perhaps"),
    "fractional int": ("ecog", "1.5"),
    "huge number": ("prior_lines", "1e300"),
}


@st.composite
def mixed_tables(draw, pool_size: int = 60):
    n = draw(st.integers(1, 10))
    rows = draw(st.lists(st.integers(0, pool_size - 1), min_size=n, max_size=n))
    faults = draw(st.lists(
        st.tuples(st.integers(0, n - 1), st.sampled_from([*CORRUPTIONS, "duplicate id"])),
        max_size=6,
    ))
    chunk_size = draw(st.integers(1, 12))
    return rows, faults, chunk_size


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=mixed_tables())
def test_random_mixes_never_crash_and_account_for_all(model, cohort_text, case):
    rows, faults, chunk_size = case
    table = cohort_text.iloc[rows].reset_index(drop=True)  # a row drawn twice repeats its id
    for row, fault in faults:
        if fault == "duplicate id":
            table.loc[row, "patient_id"] = table.loc[0, "patient_id"]
        else:
            column, value = CORRUPTIONS[fault]
            table.loc[row, column] = value
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, out, rejected = folder / "in.csv", folder / "s.parquet", folder / "r.csv"
        table.to_csv(source, index=False)
        expected, expected_rejected = score(read_table(source), model, drivers=False)
        try:
            summary = score_file(source, out, model=model, rejected_path=rejected,
                                 chunk_size=chunk_size, drivers=False)
        except ContractError as exc:  # every row rejected: exit 2, rejected rows still written
            assert "Every row" in str(exc) and expected.empty
            assert rows_of(read_table(rejected)) == set(range(1, len(table) + 1))
            assert not out.exists()
            return
        got, got_rejected = read_table(out), read_table(rejected)
        pd.testing.assert_frame_equal(got_rejected, read_table(_written(folder, expected_rejected)))

    assert summary.n_read == summary.n_scored + summary.n_rejected == len(table)
    assert len(got) + len(rows_of(got_rejected)) == len(table)  # each row in one table
    # The same answer as validating and scoring the table in one piece, in input order.
    assert got["patient_id"].tolist() == expected["patient_id"].tolist()
    np.testing.assert_allclose(got["risk"], expected["risk"], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Atomic outputs
# ------------------------------------------------------------------------------------------


def test_failure_mid_run_leaves_no_output(tmp_path, model, monkeypatch):
    source, out = tmp_path / "in.csv", tmp_path / "s.csv"
    baseline_frame(10).to_csv(source, index=False)
    out.write_text("yesterday's scores\n")
    calls = []

    def failing(self, valid, drivers=True, design=None):
        calls.append(len(valid))
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return original(self, valid, drivers=drivers, design=design)

    original = type(model).score
    monkeypatch.setattr(type(model), "score", failing)
    with pytest.raises(RuntimeError, match="disk full") as failed:
        score_file(source, out, model=model, chunk_size=5)
    # Nothing half-new, and yesterday's scores are gone rather than taken for today's (issue 15).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    assert any(f"{out}, left by an earlier run, was removed" in n for n in failed.value.__notes__)


def test_stale_temporary_files_of_killed_runs_are_removed(tmp_path, model):
    source, out = tmp_path / "in.csv", tmp_path / "s.csv"
    baseline_frame(2).to_csv(source, index=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".s.csv.{dead}.abc123.tmp"
    live = tmp_path / f".s.csv.{__import__('os').getpid()}.def456.tmp"
    stale.write_text("partial")
    live.write_text("another run, still writing")

    score_file(source, out, model=model)

    assert not stale.exists() and live.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"in.csv", "s.csv", "s.rejected.csv",
                                                    live.name}


def test_every_row_rejected_writes_rejected_rows_only(tmp_path, model):
    source, out = tmp_path / "in.csv", tmp_path / "s.parquet"
    baseline_frame(2, age_years=["-1"] * 6).to_csv(source, index=False)
    with pytest.raises(ContractError, match="Every row .* was rejected"):
        score_file(source, out, model=model, chunk_size=4)
    assert not out.exists()
    assert rows_of(read_table(tmp_path / "s.rejected.csv")) == set(range(1, 7))


@pytest.mark.parametrize(
    ("content", "message"),
    [("patient_id,age_years\nP1,61\n", "lacks required column"),
     ("patient_id,age_years\n", "no data rows"),
     ("", "is empty"),
     (None, "does not exist")],
)
def test_unusable_input_is_one_sentence(tmp_path, model, content, message):
    source = tmp_path / "in.csv"
    if content is not None:
        source.write_text(content)
    with pytest.raises(ContractError, match=message):
        score_file(source, tmp_path / "s.csv", model=model)
    assert not (tmp_path / "s.csv").exists()


def test_outputs_never_overwrite_the_input(tmp_path, model):
    source = tmp_path / "in.csv"
    baseline_frame().to_csv(source, index=False)
    with pytest.raises(ContractError, match="overwrite the input"):
        score_file(source, source, model=model)
    with pytest.raises(ContractError, match="their own file"):
        score_file(source, tmp_path / "a.csv", model=model, rejected_path=tmp_path / "a.csv")


def test_score_table_columns_in_the_input_are_refused(model):
    with pytest.raises(ContractError, match="risk_tier, which the score table adds"):
        score(baseline_frame().assign(risk_tier="high"), model)


# ------------------------------------------------------------------------------------------
# Tiers, planning, drivers, mapping
# ------------------------------------------------------------------------------------------


def test_tiers_planning_and_monotone_risk(model, trained):
    scores, _ = score(trained.cohort.baseline, model)
    assert set(scores["risk_tier"]) == set(TIERS)
    order = {tier: i for i, tier in enumerate(TIERS)}
    therapy = trained.cohort.baseline["therapy_class"].to_numpy()
    for cls, (low, high) in model.action_tiers.thresholds.items():  # tiers per therapy class
        mine = scores[therapy == cls]
        codes = mine.sort_values("risk")["risk_tier"].map(order).to_numpy()
        assert (np.diff(codes) >= 0).all()  # risk monotone in the tier
        assert (mine.loc[mine["risk"] >= high, "risk_tier"] == "high").all()
        assert (mine.loc[mine["risk"] < low, "risk_tier"] == "low").all()
        assert mine.loc[mine["risk_tier"] == "high", "planning"].str.contains(
            "Tocilizumab|tocilizumab").all()
    assert scores["risk"].between(0, 1).all()
    assert (scores["model_version"] == str(model.version)).all()


def test_drivers_are_words_with_direction_and_size(model):
    scores, _ = score(baseline_frame(), model)
    for text in scores["top_drivers"]:
        parts = text.split("; ")
        assert len(parts) == model.top_k
        assert all(("raises risk (" in p or "lowers risk (" in p) and "log-odds)" in p
                   for p in parts)
    without, _ = score(baseline_frame(), model, drivers=False)
    assert without["top_drivers"].isna().all()
    assert without["risk"].tolist() == scores["risk"].tolist()  # drivers change no risk


def test_same_input_same_answer(model, cohort_text):
    first, _ = score(cohort_text, model)
    second, _ = score(cohort_text.copy(), model)
    pd.testing.assert_frame_equal(first, second)


def test_site_mapping_is_applied_per_chunk(tmp_path, model):
    table = baseline_frame(3).rename(columns={"crp_mg_l": "CRP"})
    table["CRP"] = ["2.5", "0.4", "0.6"] * 3  # mg/dL
    mapping = tmp_path / "map.yaml"
    mapping.write_text("rename: {CRP: crp_mg_l}\nunits: {crp_mg_l: mg/dL}\n")
    source, out = tmp_path / "in.csv", tmp_path / "s.csv"
    table.to_csv(source, index=False)

    score_file(source, out, model=model, mapping=mapping, chunk_size=2)

    reference, _ = score(baseline_frame(3, crp_mg_l=["25", "4", "6"] * 3), model)
    np.testing.assert_allclose(read_table(out)["risk"].astype(float), reference["risk"],
                               rtol=0, atol=1e-12)


def test_score_frame_numbers_rejected_rows_from_the_file_top(model):
    table = baseline_frame(2, age_years=["61", "70", "24", "61", "999", "24"])
    scores, rejected, _ = score_frame(table.iloc[3:], model, row_offset=3)
    assert rejected["row_number"].tolist() == [5]
    assert scores["patient_id"].tolist() == ["P1-1", "P3-1"]


# ------------------------------------------------------------------------------------------
# Model problems
# ------------------------------------------------------------------------------------------


def test_model_errors_are_one_sentence(tmp_path, monkeypatch, model):
    with pytest.raises(ModelError, match="neither a registered model URI"):
        load_model(tmp_path / "no-such-folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(ModelError, match="no tracking store"):
        load_model("models:/crs-severe@champion")
    assert not (tmp_path / "none.db").exists()  # not created on the way


def test_model_of_another_contract_version_is_refused(trained, monkeypatch, model):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    monkeypatch.setattr("crsrisk.mlops.loading.CONTRACT_VERSION", CONTRACT_VERSION + "0")
    with pytest.raises(ModelError, match="built for data contract version 1"):
        load_model(trained.model_uri)


def test_unknown_registered_version_is_one_sentence(trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)
    with pytest.raises(ModelError, match="could not be loaded"):
        load_model("models:/crs-severe/99")


# ------------------------------------------------------------------------------------------
# The same bits for every chunk size
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logistic_model(trained, tmp_path_factory):
    """The penalised logistic candidate, fitted on the training cohort (not registered)."""
    from crsrisk.contract.grading import resolve_labels
    from crsrisk.contract.validate import validate
    from crsrisk.modeling.train import train_models
    from tests.conftest import fast_config

    config = fast_config(tmp_path_factory.mktemp("logistic"), candidates=("logistic",))
    valid = validate(trained.cohort.baseline).valid
    result = train_models(valid, resolve_labels(valid, None).severe, config)
    return result.selected.model


@pytest.mark.slow
@pytest.mark.parametrize("which", ["xgboost", "logistic"])
def test_risk_bits_do_not_depend_on_chunk_size(tmp_path, model, logistic_model, which):
    # BLAS blocked the logistic product by chunk length: sizes 1, 7 and 13 changed the last
    # bits of some risks. Every chunk size must give the very same float64 values.
    from crsrisk.scoring.core import DEFAULT_CHUNK_SIZE
    from crsrisk.simulate.cohort import simulate_cohort

    scorer = model if which == "xgboost" else logistic_model
    table = simulate_cohort(300, seed=23).baseline.drop(columns=["crs_max_grade",
                                                                 "crs_grading_scale"])
    source = tmp_path / "in.parquet"
    write_table(table, source)
    risks = {}
    for chunk_size in (DEFAULT_CHUNK_SIZE, 1, 7, 13, 7777):
        out = tmp_path / f"s{chunk_size}.parquet"
        score_file(source, out, model=scorer, chunk_size=chunk_size, drivers=False,
                   progress=False)
        risks[chunk_size] = read_table(out)["risk"].to_numpy(dtype=np.float64)
    reference = risks.pop(DEFAULT_CHUNK_SIZE)
    assert len(reference) == len(table)
    for chunk_size, risk in risks.items():
        assert np.array_equal(risk, reference), f"chunk size {chunk_size} changed some risks"


# ------------------------------------------------------------------------------------------
# Both engines refuse and clean up alike (scoring.outputs); none of this starts Spark
# ------------------------------------------------------------------------------------------


def _engine(name: str):
    if name == "pandas":
        return score_file
    from crsrisk.scoring.spark import score_file_spark

    def on_spark(source, out, **options):
        return score_file_spark(source, out, model=options.pop("model"),
                                rejected_path=options.pop("rejected_path", None),
                                drivers=False, master="local[1]", mapping=None, **options)
    return on_spark


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_engines_refuse_outputs_over_the_input_and_bad_chunk_sizes(tmp_path, model, engine):
    run = _engine(engine)
    source = tmp_path / "in.csv"
    baseline_frame().to_csv(source, index=False)
    before = source.read_bytes()
    (tmp_path / "link.csv").symlink_to(source)
    with pytest.raises(ContractError, match="overwrite the input"):
        run(source, tmp_path / "link.csv", model=model)
    with pytest.raises(ContractError, match="overwrite the input"):
        run(source, tmp_path / "s.csv", model=model, rejected_path=source)
    with pytest.raises(ContractError, match="their own file"):
        run(source, tmp_path / "a.csv", model=model, rejected_path=tmp_path / "a.csv")
    with pytest.raises(ValueError, match="chunk_size must be at least 1"):
        run(source, tmp_path / "s.csv", model=model, chunk_size=0)
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "link.csv"]


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_engines_remove_a_killed_runs_temporaries_and_stale_outputs(tmp_path, engine):
    run = _engine(engine)
    source, out = tmp_path / "in.csv", tmp_path / "s.csv"
    baseline_frame().to_csv(source, index=False)
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    leftover = tmp_path / f".s.csv.{dead}.abc.tmp"
    leftover.write_text("partial")
    out.write_text("yesterday's scores")
    with pytest.raises(ModelError) as failed:
        run(source, out, model=tmp_path / "no-such-model")
    assert not leftover.exists()
    assert not out.exists()  # a failed run leaves no earlier score file to be taken for its own
    assert any("left by an earlier run" in note for note in failed.value.__notes__)
