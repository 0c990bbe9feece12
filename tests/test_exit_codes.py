"""Exit codes, one table for every command, and environment faults as one sentence.

| code | meaning                                                                    |
|------|----------------------------------------------------------------------------|
| 0    | all done                                                                   |
| 1    | some rows rejected (in the rejected table)                                 |
| 2    | unusable input, configuration or model                                     |
| 3    | environment fault: output or store unwritable/unreachable, disk full, ... |
| 130  | interrupted                                                                |
"""

from __future__ import annotations

import errno
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from crsrisk.cli import app
from crsrisk.simulate.cohort import simulate_cohort

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "cohort.csv"
    simulate_cohort(40, seed=5).baseline.to_csv(path, index=False)
    return path


def one_sentence_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


def test_help_lists_every_exit_code():
    result = run("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # the help is wrapped to the terminal
    for words in ("0 all done", "1 some rows rejected", "2 unusable input",
                  "3 environment fault", "disk full", "130 interrupted"):
        assert words in text, words


def test_each_exit_code(tmp_path, cohort, monkeypatch):
    # 0: everything done.
    assert run("simulate", "--n", "20", "--out", tmp_path / "ok.csv").exit_code == 0
    # 1: rows rejected.
    table = pd.read_csv(cohort, dtype=str)
    table.loc[0, "age_years"] = "-4"
    table.to_csv(tmp_path / "one_bad.csv", index=False)
    result = run("validate", tmp_path / "one_bad.csv", "--rejected", tmp_path / "rej.csv")
    assert result.exit_code == 1, result.output
    # 2: unusable input.
    result = run("validate", tmp_path / "absent.csv", "--rejected", tmp_path / "rej2.csv")
    assert result.exit_code == 2 and "does not exist" in result.output
    # 3: the environment: the output folder is a file.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = run("simulate", "--n", "20", "--out", blocker / "cohort.csv")
    assert result.exit_code == 3, result.output
    assert f"{blocker} is a file, not a folder" in one_sentence_error(result.output)
    # 130: interrupted.

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("crsrisk.simulate.cohort.simulate_cohort", interrupted)
    result = run("simulate", "--n", "20", "--out", tmp_path / "never.csv")
    assert result.exit_code == 130 and "interrupted" in result.output
    assert not (tmp_path / "never.csv").exists()


def test_unwritable_output_folder_exits_3_naming_it(tmp_path, cohort, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()

    def denied(*args, **kwargs):  # tests run as root here, where chmod does not lock a folder
        raise PermissionError(errno.EACCES, "Permission denied", str(folder))

    monkeypatch.setattr("crsrisk.io._create_new", denied)
    result = run("validate", cohort, "--rejected", folder / "rejected.csv")
    assert result.exit_code == 3, result.output
    message = one_sentence_error(result.output)
    assert f"Cannot write {folder / 'rejected.csv'}" in message
    assert f"permission to write in {folder} is denied" in message
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("where", ["rename", "write"])
def test_disk_full_exits_3_and_leaves_no_file(tmp_path, monkeypatch, where):
    out = tmp_path / "cohort.csv"
    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "rename":
        def no_space(*args, **kwargs):
            raise full

        monkeypatch.setattr("crsrisk.io.os.replace", no_space)
    else:
        def no_space_writing(self, *args, **kwargs):
            raise full

        monkeypatch.setattr(pd.DataFrame, "to_csv", no_space_writing)
    result = run("simulate", "--n", "20", "--out", out)
    assert result.exit_code == 3, result.output
    assert f"the disk holding {tmp_path} is full" in one_sentence_error(result.output)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file


def test_output_that_is_a_folder_exits_3(tmp_path):
    out = tmp_path / "cohort.csv"
    out.mkdir()
    result = run("simulate", "--n", "20", "--out", out)
    assert result.exit_code == 3, result.output
    assert f"{out} is a folder: give a file name" in one_sentence_error(result.output)


def test_an_operating_system_error_outside_atomic_writes_exits_3(tmp_path, monkeypatch):
    target = tmp_path / "elsewhere.csv"

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(target))

    monkeypatch.setattr("crsrisk.simulate.cohort.simulate_cohort", read_only)
    result = run("simulate", "--n", "20", "--out", tmp_path / "x.csv")
    assert result.exit_code == 3, result.output
    assert "read-only file system" in one_sentence_error(result.output)


@pytest.mark.skipif(importlib.util.find_spec("pyspark") is None,
                    reason="pyspark (the [spark] extra) is not installed: nothing would warn")
def test_no_pyspark_warning_without_spark(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env.pop("PYTHONWARNINGS", None)
    for args in (["--help"],
                 ["simulate", "--n", "20", "--out", str(tmp_path / "c.csv")],
                 ["validate", str(tmp_path / "c.csv"), "--rejected", str(tmp_path / "r.csv")]):
        done = subprocess.run([sys.executable, "-m", "crsrisk", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "PySpark" not in done.stderr and "Warning" not in done.stderr, args


def test_a_corrupted_model_exits_3(tmp_path, monkeypatch, cohort):
    from crsrisk.errors import CorruptModelError

    def corrupted(uri):
        raise CorruptModelError(f"{uri}/model.json is not a valid crsrisk model (cut short).")

    monkeypatch.setattr("crsrisk.scoring.core.load_model", corrupted)
    result = run("score", cohort, "--out", tmp_path / "scores.csv", "--model", "models:/m/1")
    assert result.exit_code == 3, result.output
    assert "is not a valid crsrisk model" in one_sentence_error(result.output)
