"""The Python API and the pyfunc model import without third-party warnings (issue 16)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


@pytest.mark.skipif(importlib.util.find_spec("pyspark") is None,
                    reason="pyspark is not installed, so it cannot warn")
def test_importing_the_python_api_shows_no_pyspark_warning():
    """pandera imports pyspark.pandas, which warns about pandas 3; a user who never asked for
    Spark must not see it."""
    modules = "crsrisk.contract.validate, crsrisk.scoring.core, crsrisk.mlops.pyfunc"
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c",
                           f"import {modules}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "PySpark" not in done.stderr
