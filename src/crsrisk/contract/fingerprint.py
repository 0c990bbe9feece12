"""Fingerprints of tables: sha256 of the contents, recorded with every run; they reveal no row."""

from __future__ import annotations

import hashlib

import pandas as pd

from crsrisk.contract.spec import BASELINE_NAMES, CONTRACT_VERSION, OUTCOME_NAMES

__all__ = ["data_fingerprint", "fingerprint_frame"]


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
