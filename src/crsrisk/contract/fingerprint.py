"""Fingerprints of tables, recorded with every run: a table's sha256, and a short hash per row.

The per-row hashes let `crsrisk evaluate` recognise rows a model was trained on. They are 64-bit
digests of a row's contract values: they cannot be turned back into the row, but whoever holds a
row can check whether it was a training row, so they are kept with the model, never in logs.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from crsrisk.contract.spec import BASELINE_NAMES, CONTRACT_VERSION, OUTCOME_NAMES

__all__ = ["ROW_HASH_COLUMNS", "data_fingerprint", "fingerprint_frame", "row_hashes"]

# The patient id is left out: the same patient exported again under a new id is the same row.
ROW_HASH_COLUMNS = tuple(name for name in BASELINE_NAMES if name != "patient_id")


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """sha256 of a table's contents (order-sensitive); reveals nothing of the rows."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def data_fingerprint(valid: pd.DataFrame, severe: pd.Series, extra: dict[str, str]) -> dict:
    columns = [c for c in (*BASELINE_NAMES, *OUTCOME_NAMES) if c in valid.columns]
    return {
        "data_sha256": fingerprint_frame(valid[columns].assign(_severe=severe.to_numpy())),
        "data_rows": str(len(valid)),
        "data_events": str(int(severe.sum())),
        # The simulator's ids (SIM-000001...): reports warn that such a model is for testing.
        "data_simulated": str(bool(valid["patient_id"].astype("str").str.startswith("SIM-").all())
                              ).lower(),
        "contract_version": CONTRACT_VERSION,
        **extra,
    }


def row_hashes(valid: pd.DataFrame) -> np.ndarray:
    """One hex digest per row of validated contract rows, from its baseline contract values.

    Parameters
    ----------
    valid : pandas.DataFrame
        Rows as contract validation returns them (contract dtypes), with every column of
        `ROW_HASH_COLUMNS`; other columns (outcomes, extras) are ignored.

    Returns
    -------
    numpy.ndarray of str
        16 hex characters per row, in row order; equal rows give equal digests whatever the
        file format, row order or patient id they came with.
    """
    missing = [name for name in ROW_HASH_COLUMNS if name not in valid.columns]
    if missing:
        raise ValueError(f"row_hashes needs validated contract rows; missing columns {missing}")
    hashed = pd.util.hash_pandas_object(valid[list(ROW_HASH_COLUMNS)], index=False).to_numpy()
    return np.array([format(int(h), "016x") for h in hashed], dtype=object)
