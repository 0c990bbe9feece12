"""`crsrisk score` and `crsrisk stratify` on the command line: exit codes, outputs, messages.

| input                                   | outcome                                              |
|-----------------------------------------|------------------------------------------------------|
| all rows valid                          | exit 0, scores, empty rejected table, summary line   |
| some rows invalid                       | exit 1, the rest scored, each bad row rejected       |
| required column missing, unknown model, | exit 2, one sentence, no score file                  |
|   every row rejected                    |   (the rejected rows are still written)              |
| --engine spark without pyspark          | exit 2, one sentence naming the extra to install     |
| SIGKILL mid-run                         | no output file at all, not even a partial one        |
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.io import read_table
from crsrisk.mlops.export import export_model
from crsrisk.scoring.core import DEFAULT_CHUNK_SIZE
from crsrisk.scoring.outputs import ScoreSummary
from tests.conftest import baseline_frame

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(trained, tmp_path_factory) -> Path:
    """The champion exported once: loads fast and needs no tracking store."""
    folder = tmp_path_factory.mktemp("cli-models") / "champion"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", trained.uri)
        export_model(trained.model_uri, folder)
    return folder


def run(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def write(folder: Path, df: pd.DataFrame, name: str = "in.csv") -> Path:
    path = folder / name
    df.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------
# crsrisk score
# ------------------------------------------------------------------------------------------


def test_all_valid_exits_0_with_a_summary_line(tmp_path, trained, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.uri)  # the default: the champion alias
    source = write(tmp_path, baseline_frame(2))
    result = run("score", source, "--out", tmp_path / "s.parquet")
    assert result.exit_code == 0, result.output
    assert "read 6, scored 6, rejected 0 (low " in result.output
    assert "model crs-severe v1" in result.output
    assert "scoring" not in result.output  # no progress bar in a pipe
    assert len(read_table(tmp_path / "s.parquet")) == 6
    assert read_table(tmp_path / "s.rejected.csv").empty


def test_rejected_rows_exit_1_and_are_named(tmp_path, model_dir):
    # Not a number: rejected (an out-of-range laboratory value would be blanked, the row scored).
    source = write(tmp_path, baseline_frame(2, platelets_1e9_l=["many"] + ["150"] * 5))
    result = run("score", source, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--rejected", tmp_path / "bad.csv", "--no-drivers", "--chunk-size", "2")
    assert result.exit_code == 1, result.output
    assert "scored 5, rejected 1" in result.output and "bad.csv" in result.output
    rejected = read_table(tmp_path / "bad.csv")
    assert rejected[["row_number", "column"]].values.tolist() == [["1", "platelets_1e9_l"]]
    assert read_table(tmp_path / "s.csv")["top_drivers"].isna().all()


def test_progress_bar_when_asked(tmp_path, model_dir):
    source = write(tmp_path, baseline_frame(1))
    result = run("score", source, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--progress")
    assert result.exit_code == 0 and "scoring" in result.output


@pytest.mark.parametrize(
    ("table", "model", "words"),
    [
        (baseline_frame().drop(columns=["age_years"]), None, "lacks required column(s) age_years"),
        (baseline_frame(), "models/nothing-here", "neither a registered model URI"),
        (baseline_frame(age_years=["300"] * 3), None, "Every row of"),
    ],
    ids=["missing column", "unknown model", "all rejected"],
)
def test_unusable_input_or_model_exits_2(tmp_path, model_dir, table, model, words):
    source = write(tmp_path, table)
    result = run("score", source, "--out", tmp_path / "s.csv", "--model", model or model_dir)
    assert result.exit_code == 2
    assert words in result.output and result.output.startswith("error: ")
    assert not (tmp_path / "s.csv").exists()
    if words == "Every row of":
        assert len(read_table(tmp_path / "s.rejected.csv")) == 3


def test_spark_engine_without_pyspark_says_what_to_install(tmp_path, model_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyspark" else real(name, *a))
    source = write(tmp_path, baseline_frame())
    result = run("score", source, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--engine", "spark")
    assert result.exit_code == 2
    assert "pip install 'crsrisk[spark]'" in result.output


def test_spark_engine_dispatches_to_the_spark_backend(tmp_path, model_dir, monkeypatch):
    import importlib.util

    calls = []

    def score_file_spark(input_path, out, **kwargs):
        calls.append((input_path, out, kwargs))
        return ScoreSummary(n_read=3, n_scored=3, model="crs-severe v1", seconds=1.0)

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "pyspark" else real(name, *a))
    monkeypatch.setitem(sys.modules, "crsrisk.scoring.spark",
                        types.SimpleNamespace(score_file_spark=score_file_spark))
    source = write(tmp_path, baseline_frame())
    result = run("score", source, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--engine", "spark", "--master", "local[4]", "--no-drivers")
    assert result.exit_code == 0, result.output
    (input_path, out, kwargs), = calls
    assert kwargs["master"] == "local[4]" and kwargs["drivers"] is False
    assert kwargs["model"] == str(model_dir) and kwargs["chunk_size"] == DEFAULT_CHUNK_SIZE


def test_sigkill_mid_run_leaves_no_partial_output(tmp_path, model_dir, trained):
    cohort = pd.concat([trained.cohort.baseline] * 8, ignore_index=True)  # 16,000 rows
    cohort["patient_id"] = [f"K{i:06d}" for i in range(len(cohort))]
    source = write(tmp_path, cohort)
    out, rejected = tmp_path / "scores.csv", tmp_path / "scores.rejected.csv"
    command = [sys.executable, "-m", "crsrisk", "score", str(source), "--out", str(out),
               "--model", str(model_dir), "--chunk-size", "500"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".scores.csv.") and p.stat().st_size > 0
                      for p in tmp_path.iterdir()):  # the first chunk is being written
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no progress within 60 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()

    assert not out.exists() and not rejected.exists()
    leftovers = {p.name for p in tmp_path.iterdir()} - {"in.csv"}
    assert leftovers and all(n.startswith(".") and n.endswith(".tmp") for n in leftovers)
    assert all(f".{process.pid}." in n for n in leftovers)  # named after the killed run

    # The next run cleans up after it.
    result = run("score", source, "--out", out, "--model", model_dir, "--no-drivers")
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir()} == {"in.csv", out.name, rejected.name}


def test_sigterm_is_handled_like_ctrl_c(tmp_path, model_dir, trained):
    cohort = pd.concat([trained.cohort.baseline] * 4, ignore_index=True)
    cohort["patient_id"] = [f"T{i:06d}" for i in range(len(cohort))]
    source = write(tmp_path, cohort)
    command = [sys.executable, "-m", "crsrisk", "score", str(source), "--out",
               str(tmp_path / "s.csv"), "--model", str(model_dir), "--chunk-size", "500"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".s.csv.") for p in tmp_path.iterdir()):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err.decode()
    assert "interrupted: no output was written" in err.decode()
    assert {p.name for p in tmp_path.iterdir()} == {"in.csv"}


def test_serve_refuses_an_unusable_model_before_starting(tmp_path):
    result = run("serve", "--model", tmp_path / "no-model", "--port", "5999")
    assert result.exit_code == 2 and "neither a registered model URI" in result.output


# ------------------------------------------------------------------------------------------
# crsrisk stratify
# ------------------------------------------------------------------------------------------


def test_stratify_quantiles_with_randomisation(tmp_path, model_dir, trained):
    source = write(tmp_path, trained.cohort.baseline.head(120))
    out = tmp_path / "strata.csv"
    result = run("stratify", source, "--out", out, "--model", model_dir, "--strata", "3",
                 "--randomize", "A,B", "--block-size", "4", "--seed", "7")
    assert result.exit_code == 0, result.output
    patients = read_table(out)
    assert list(patients.columns) == ["patient_id", "risk", "risk_tier", "stratum", "arm"]
    assert patients["stratum"].nunique() == 3 and set(patients["arm"]) == {"A", "B"}
    summary = read_table(tmp_path / "strata.summary.csv")
    assert summary["n"].astype(int).sum() == 120
    assert "expected_events" in result.output  # the summary table on stdout
    again = run("stratify", source, "--out", tmp_path / "again.csv", "--model", model_dir,
                "--strata", "3", "--randomize", "A,B", "--block-size", "4", "--seed", "7")
    assert again.exit_code == 0
    assert read_table(tmp_path / "again.csv").equals(patients)  # same seed, same arms


def test_stratify_thresholds_and_rejected_rows_exit_1(tmp_path, model_dir):
    source = write(tmp_path, baseline_frame(3, age_years=["61", "-4", "24"] * 3))
    result = run("stratify", source, "--out", tmp_path / "s.parquet", "--model", model_dir,
                 "--thresholds", "0.03,0.12")
    assert result.exit_code == 1, result.output
    assert "3 rows rejected" in result.output
    assert len(read_table(tmp_path / "s.parquet")) == 6
    assert len(read_table(tmp_path / "s.rejected.csv")) == 3


@pytest.mark.parametrize(
    ("args", "table", "words"),
    [
        (["--thresholds", "0.1,high"], None, "must be numbers separated by commas"),
        (["--strata", "2", "--thresholds", "0.1"], None, "exactly one"),
        (["--randomize", "A,B"], None, "block_size"),
        ([], baseline_frame(age_years=["-1"] * 3), "nothing was stratified"),
    ],
    ids=["bad thresholds", "both", "arms without block", "all rejected"],
)
def test_stratify_problems_exit_2_in_one_sentence(tmp_path, model_dir, args, table, words):
    source = write(tmp_path, baseline_frame() if table is None else table)
    result = run("stratify", source, "--out", tmp_path / "s.csv", "--model", model_dir, *args)
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert not (tmp_path / "s.csv").exists()
    if table is not None:
        assert len(read_table(tmp_path / "s.rejected.csv")) == 3


# ------------------------------------------------------------------------------------------
# No output over an input, in any command; no stale output
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["validate", "{input}", "--rejected", "{input}"],
    ["validate", "{input}", "--rejected", "{link}"],  # the same file through a symlink
    ["score", "{input}", "--out", "{relative}", "--model", "{model}"],
    ["score", "{input}", "--out", "s.csv", "--rejected", "{input}", "--model", "{model}"],
    ["stratify", "{input}", "--out", "{input}", "--model", "{model}"],
    ["stratify", "{input}", "--out", "p.csv", "--summary", "{input}", "--model", "{model}"],
    ["evaluate", "--data", "{input}", "--out", "{json}", "--model", "{model}", "--no-log"],
    ["report", "--out", "{html}", "--data", "{html}", "--model", "{model}"],
    ["export", "--model", "{model}", "--out", "{model}"],
])
def test_no_command_writes_over_its_input(tmp_path, model_dir, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = write(tmp_path, baseline_frame(2))
    (tmp_path / "link.csv").symlink_to(source)
    json_in, html_in = tmp_path / "m.json", tmp_path / "r.html"
    json_in.write_text("{}")
    html_in.write_text("<html></html>")
    before = {p: p.read_bytes() for p in (source, json_in, html_in)}
    model_files = sorted(p.name for p in model_dir.iterdir())
    places = {"input": source, "link": tmp_path / "link.csv", "relative": "./in.csv",
              "model": model_dir, "json": json_in, "html": html_in}
    if command[0] == "evaluate":  # --data is the json file: same path as --out
        places["input"] = json_in
    result = run(*[part.format(**places) for part in command])
    assert result.exit_code == 2, result.output
    assert "would overwrite" in result.output or "are both" in result.output, result.output
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in model_dir.iterdir()) == model_files


def test_every_row_rejected_removes_the_old_scores(tmp_path, model_dir):
    # Yesterday's scores.csv beside today's rejected table would be taken for today's scores.
    out, rejected = tmp_path / "scores.csv", tmp_path / "scores.rejected.csv"
    good = write(tmp_path, baseline_frame(1), "good.csv")
    assert run("score", good, "--out", out, "--model", model_dir).exit_code == 0
    assert out.exists()
    bad = write(tmp_path, baseline_frame(1, age_years=["150"] * 3), "bad.csv")
    result = run("score", bad, "--out", out, "--model", model_dir)
    assert result.exit_code == 2
    assert not out.exists()
    assert f"{out}, left by an earlier run, was removed" in " ".join(result.output.split())
    assert len(read_table(rejected)) == 3


def test_a_failed_run_removes_the_old_outputs(tmp_path, model_dir):
    out, rejected = tmp_path / "scores.parquet", tmp_path / "scores.rejected.csv"
    good = write(tmp_path, baseline_frame(1), "good.csv")
    assert run("score", good, "--out", out, "--model", model_dir).exit_code == 0
    broken = tmp_path / "broken.csv"
    broken.write_text("patient_id,age_years\nP1,50\n")  # found unusable while reading
    result = run("score", broken, "--out", out, "--model", model_dir)
    assert result.exit_code == 2
    assert not out.exists() and not rejected.exists()
    assert "note:" in result.output and "left by an earlier run" in result.output


def test_stratify_every_row_rejected_removes_the_old_strata(tmp_path, model_dir):
    out, summary = tmp_path / "p.csv", tmp_path / "p.summary.csv"
    good = write(tmp_path, baseline_frame(3), "good.csv")
    assert run("stratify", good, "--out", out, "--model", model_dir,
               "--strata", "2").exit_code == 0
    bad = write(tmp_path, baseline_frame(1, age_years=["150"] * 3), "bad.csv")
    result = run("stratify", bad, "--out", out, "--model", model_dir)
    assert result.exit_code == 2
    assert not out.exists() and not summary.exists()
    assert len(read_table(tmp_path / "p.rejected.csv")) == 3


# ------------------------------------------------------------------------------------------
# crsrisk score: implausible values, --strict, --sheet, tier counts per therapy class
# ------------------------------------------------------------------------------------------


def printed_tier_counts(output: str) -> dict[tuple[str, str], int]:
    """The tier counts per therapy class that `crsrisk score` printed: {(class, tier): n}."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["therapy_class"])
    tiers = lines[start].split()[1:]
    counts = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if not line.startswith("  ") or len(cells) != len(tiers) + 1:
            break
        counts.update({(cells[0], t): int(n.replace(",", ""))
                       for t, n in zip(tiers, cells[1:], strict=True)})
    return counts


def score_table_counts(scores: pd.DataFrame, source: pd.DataFrame) -> dict[tuple[str, str], int]:
    """The same counts from the written score table (therapy class joined from the input)."""
    joined = scores.merge(source[["patient_id", "therapy_class"]], on="patient_id")
    assert len(joined) == len(scores)
    counts = joined.groupby(["therapy_class", "risk_tier"]).size()
    return {key: int(n) for key, n in counts.items()}


def test_tier_counts_per_therapy_class_equal_the_score_table(tmp_path, model_dir):
    table = baseline_frame(4)  # CAR-T and bispecific patients
    source = write(tmp_path, table)
    result = run("score", source, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--no-drivers", "--chunk-size", "5")
    assert result.exit_code == 0, result.output
    printed = printed_tier_counts(result.output)
    expected = score_table_counts(read_table(tmp_path / "s.csv"), table)
    assert {k: n for k, n in printed.items() if n and k[0] != "total"} == expected
    assert {c for c, _ in printed} == {"CAR-T", "bispecific", "total"}
    assert sum(n for (c, _), n in printed.items() if c == "total") == len(table)


def test_an_implausible_lab_is_blanked_and_scored_unless_strict(tmp_path, model_dir):
    table = baseline_frame(2)
    table.loc[0, "hemoglobin_g_dl"] = "0.1"  # an entry error: 1 g/L written as g/dL
    source = write(tmp_path, table)
    rejected = tmp_path / "rej.csv"
    result = run("score", source, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--rejected", rejected, "--no-drivers")
    assert result.exit_code == 1, result.output
    assert "scored 6, rejected 0, blanked 1 values" in result.output
    assert "implausible laboratory values are blanked and their row used" in result.output
    assert "P1-0" in read_table(tmp_path / "s.csv")["patient_id"].tolist()
    blanked = read_table(rejected)
    assert blanked[["row_number", "column", "value", "action"]].values.tolist() == [
        ["1", "hemoglobin_g_dl", "0.1", "blanked"]]

    strict = run("score", source, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--rejected", rejected, "--no-drivers", "--strict")
    assert strict.exit_code == 1, strict.output
    assert "scored 5, rejected 1" in strict.output and "blanked" not in strict.output.split(
        "\n")[0]
    assert "implausible laboratory values reject their row (--strict)" in strict.output
    assert "P1-0" not in read_table(tmp_path / "s.csv")["patient_id"].tolist()
    assert read_table(rejected)[["row_number", "column", "action"]].values.tolist() == [
        ["1", "hemoglobin_g_dl", "rejected"]]


@pytest.fixture
def workbook(tmp_path) -> Path:
    """An Excel export whose first sheet is a cover note and the second the baseline table."""
    path = tmp_path / "export.xlsx"
    with pd.ExcelWriter(path) as writer:
        cover = pd.DataFrame({"note": ["exported 2026-11-30"]})
        cover.to_excel(writer, sheet_name="cover", index=False)
        baseline_frame(2).to_excel(writer, sheet_name="baseline", index=False)
    return path


def test_sheet_picks_the_named_sheet(tmp_path, model_dir, workbook):
    result = run("score", workbook, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--sheet", "baseline", "--no-drivers")
    assert result.exit_code == 0, result.output
    assert len(read_table(tmp_path / "s.csv")) == 6
    first = run("score", workbook, "--out", tmp_path / "s.csv", "--model", model_dir)
    assert first.exit_code == 2 and "lacks required column(s)" in first.output


def test_an_unknown_sheet_exits_2_naming_the_sheets(tmp_path, model_dir, workbook):
    result = run("score", workbook, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--sheet", "Baseline 2026")
    assert result.exit_code == 2
    assert "has no sheet 'Baseline 2026': its sheets are 'cover', 'baseline'" in result.output
    assert not (tmp_path / "s.csv").exists()


def test_sheet_on_a_csv_file_is_refused(tmp_path, model_dir):
    source = write(tmp_path, baseline_frame())
    result = run("score", source, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--sheet", "baseline")
    assert result.exit_code == 2 and "--sheet applies to Excel files only" in result.output


def test_the_mappings_file_options_are_used_when_scoring(tmp_path, model_dir, workbook):
    mapping = tmp_path / "m.yaml"
    mapping.write_text("file: {sheet: baseline}\n")
    result = run("score", workbook, "--out", tmp_path / "s.csv", "--model", model_dir,
                 "--mapping", mapping, "--no-drivers")
    assert result.exit_code == 0, result.output
    assert len(read_table(tmp_path / "s.csv")) == 6
