"""The MLflow PythonModel: a baseline table in, one answer per row out.

Whatever dtypes pandas, Parquet, Spark or a JSON request give the contract columns (int64,
nullable Int64, float, bool, boolean, str, object, category, datetime), the model parses and
checks them exactly as batch scoring does. Each input row gets one output row, in input order:
``status`` "scored" with its risk, tier, drivers and planning text, or "rejected" with an empty
risk. ``problems`` is a JSON list of column, rule and value: why a row was rejected, or which
implausible laboratory values of a scored row were blanked (scored as missing), as the batch
rejected table lists them; empty otherwise. Only a table that cannot be read
as the contract's baseline table (no rows, a required column absent, not a table) is refused as
a whole, with a `ContractError` naming the problem and no row data.

The model is logged as code (`crsrisk.mlops._pyfunc_code`, MLflow "models from code"), so no
pickle of it is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from crsrisk.contract.spec import BASELINE_COLUMNS, CONTRACT_VERSION
from crsrisk.contract.validate import stripped_text, validate
from crsrisk.errors import ContractError
from crsrisk.modeling.riskmodel import FLOAT_SCORE_COLUMNS, RiskModel

__all__ = [
    "ARTIFACT_KEY",
    "CODE_PATH",
    "OUTPUT_COLUMNS",
    "SCORED",
    "REJECTED",
    "SMALL_BATCH",
    "signature",
    "input_metadata",
    "to_wire",
    "as_table",
    "answer_rows",
    "CrsRiskModel",
]

ARTIFACT_KEY = "risk_model"
# The file MLflow logs as the model's code ("models from code"): it calls set_model.
CODE_PATH = Path(__file__).with_name("_pyfunc_code.py")
SCORED, REJECTED = "scored", "rejected"
# Up to this many rows, XGBoost runs on one thread: for a few rows its threads cost more in
# start-up and contention than they save (about 3 ms against 10-30 ms for one row on 2 cores);
# a prediction is the same on any number of threads.
SMALL_BATCH = 2_000
# The score table of the data contract (section 5), with each row's status and problems.
OUTPUT_COLUMNS = ("patient_id", "status", "risk", "risk_lower", "risk_upper", "risk_tier",
                  "top_drivers", "planning",
                  "model_name", "model_version", "problems")

_log = logging.getLogger(__name__)


def signature() -> ModelSignature:
    """Output: one answer per input row. Params: drivers, strict. No input schema (see below).

    MLflow 3.17 enforces an input schema before the model sees the rows: a typed schema refuses
    int64 for a double column, bool for a string, nullable Int64 / boolean and category; an
    ``AnyType`` schema lets every dtype through but converts each cell in Python (about a second
    per 10,000 rows of this contract) and drops columns it does not name. So the input columns
    are documented in the model's metadata (`input_metadata`) and its input example, and the
    model itself parses and checks them.
    """
    outputs = Schema([
        ColSpec("string", "patient_id", required=False),
        ColSpec("string", "status"),
        ColSpec("double", "risk", required=False),
        ColSpec("double", "risk_lower", required=False),
        ColSpec("double", "risk_upper", required=False),
        *(ColSpec("string", name, required=False)
          for name in ("risk_tier", "top_drivers", "planning")),
        ColSpec("string", "model_name"),
        ColSpec("string", "model_version"),
        ColSpec("string", "problems", required=False),
    ])
    params = ParamSchema([ParamSpec("drivers", "boolean", True),
                          ParamSpec("strict", "boolean", False)])
    return ModelSignature(inputs=None, outputs=outputs, params=params)


def input_metadata() -> dict:
    """The input the model takes, for the MLmodel file: the contract's baseline columns."""
    return {
        "crsrisk_contract_version": CONTRACT_VERSION,
        "input": "the baseline table of the crsrisk data contract, any pandas dtypes",
        "required_columns": [s.name for s in BASELINE_COLUMNS if s.required],
        "optional_columns": [s.name for s in BASELINE_COLUMNS if not s.required],
    }


def to_wire(valid: pd.DataFrame) -> pd.DataFrame:
    """Validated rows as a JSON client sends them: numbers, ISO dates, true/false, text."""
    out = {}
    for spec in BASELINE_COLUMNS:
        col = valid[spec.name]
        if spec.kind in ("float", "int"):
            out[spec.name] = col.astype("float64")
        elif spec.kind == "date":
            out[spec.name] = col.dt.strftime("%Y-%m-%d")
        elif spec.kind == "bool":
            out[spec.name] = col.map({True: "true", False: "false"}).astype("str")
        else:
            out[spec.name] = col.astype("str")
    return pd.DataFrame(out, index=valid.index)


def as_table(model_input: object) -> pd.DataFrame:
    """``model_input`` as a DataFrame: a DataFrame, one record (dict) or a list of records.

    Raises
    ------
    ContractError
        Anything else (a list of numbers, an array, text): the model takes a table.
    """
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, Mapping):
        model_input = [model_input]
    if (isinstance(model_input, Sequence) and not isinstance(model_input, str | bytes)
            and all(isinstance(r, Mapping) for r in model_input)):
        return pd.DataFrame.from_records(list(model_input))
    raise ContractError(
        f"The model takes a table (a DataFrame, or records with the contract's column names), "
        f"not {type(model_input).__name__}: send the baseline table of the data contract."
    )


def _problems_text(rejected: pd.DataFrame) -> dict[int, str]:
    """Position of each rejected row -> a JSON list of its problems (column, rule, value)."""
    texts = {}
    for row_number, rows in rejected.groupby("row_number", sort=False):
        problems = [{"column": r.column, "rule": r.check, "value": r.value}
                    for r in rows.itertuples()]
        texts[int(row_number) - 1] = json.dumps(problems, ensure_ascii=False)
    return texts


def answer_rows(table: pd.DataFrame, risk_model: RiskModel, drivers: bool = True,
                strict: bool = False) -> pd.DataFrame:
    """One answer per row of ``table``, in its order (`OUTPUT_COLUMNS`).

    ``strict``: reject a row with an implausible laboratory value instead of blanking the
    value (as ``crsrisk score --strict``).

    Raises
    ------
    ContractError
        The table is unusable as a whole: no rows, a required column absent, duplicated names.
    """
    table = table.reset_index(drop=True)
    result = validate(table, with_outcome=False, allow_all_rejected=True, strict=strict)
    for warning in result.warnings:
        _log.warning(warning)
    n = len(table)
    valid = result.valid  # indexed by row position
    at = valid.index.to_numpy()
    scored = np.zeros(n, dtype=bool)
    scored[at] = True
    scores = risk_model.score(valid, drivers=drivers) if len(valid) else None
    columns: dict[str, object] = {
        "patient_id": stripped_text(table["patient_id"]).astype("str").array,
        "status": _text_array(np.where(scored, SCORED, REJECTED)),
    }
    for name in FLOAT_SCORE_COLUMNS:
        values = np.full(n, np.nan)
        if scores is not None:
            values[at] = scores[name].to_numpy(dtype="float64")
        columns[name] = values
    for name in ("risk_tier", "top_drivers", "planning"):
        values = np.full(n, None, dtype=object)
        if scores is not None:
            values[at] = scores[name].to_numpy(dtype=object)
        columns[name] = _text_array(values)
    # A rejected row's problems say why; a scored row's, which implausible values were blanked.
    texts = _problems_text(result.rejected) if len(result.rejected) else {}
    columns["model_name"] = _text_array(np.full(n, risk_model.name, dtype=object))
    columns["model_version"] = _text_array(np.full(n, str(risk_model.version), dtype=object))
    columns["problems"] = _text_array(np.array([texts.get(i) for i in range(n)], dtype=object))
    return pd.DataFrame(columns, index=pd.RangeIndex(n))


def _text_array(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Text cells (None or NaN missing) as the pandas text dtype."""
    return pd.array(values, dtype="str")


class CrsRiskModel(PythonModel):
    """Score contract rows with a crsrisk RiskModel stored as the model's artefact."""

    def load_context(self, context: PythonModelContext) -> None:
        self.risk_model = RiskModel.load(Path(context.artifacts[ARTIFACT_KEY]))
        self._threads = 0

    def _xgboost_threads(self, n_rows: int) -> contextlib.AbstractContextManager:
        """One thread for small batches, every core for large ones (booster and DMatrix)."""
        if self.risk_model.kind != "xgboost":
            return contextlib.nullcontext()
        threads = 1 if n_rows <= SMALL_BATCH else (os.cpu_count() or 1)
        if threads != getattr(self, "_threads", 0):
            self.risk_model.adapter.booster.set_param({"nthread": threads})
            self._threads = threads
        return xgb.config_context(nthread=threads)

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, bool] | None = None,
    ) -> pd.DataFrame:
        """One answer per input row (`answer_rows`); ``params={"drivers": False}`` is faster,
        ``params={"strict": True}`` rejects a row with an implausible laboratory value."""
        params = params or {}
        drivers, strict = bool(params.get("drivers", True)), bool(params.get("strict", False))
        table = as_table(model_input)
        with self._xgboost_threads(len(table)):
            return answer_rows(table, self.risk_model, drivers=drivers, strict=strict)
