"""The MLflow PythonModel: the contract's baseline table in, the contract's score table out.

Rows are validated exactly as batch scoring validates them; a table with rejected rows is refused
with a message naming each problem (the REST server answers it with HTTP 400).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from crsrisk.contract.spec import BASELINE_COLUMNS, ColumnSpec
from crsrisk.contract.validate import validate
from crsrisk.errors import ContractError
from crsrisk.modeling.riskmodel import FLOAT_SCORE_COLUMNS, SCORE_COLUMNS, RiskModel

__all__ = [
    "ARTIFACT_KEY",
    "MAX_PROBLEMS_IN_MESSAGE",
    "signature",
    "to_wire",
    "problems_message",
    "CrsRiskModel",
]

ARTIFACT_KEY = "risk_model"
MAX_PROBLEMS_IN_MESSAGE = 10


def _signature_type(spec: ColumnSpec) -> str:
    # Integers may be missing and categoricals don't round-trip (pitfalls.md): sign them as
    # double and string; the model parses them exactly as batch scoring does.
    return "double" if spec.kind in ("float", "int") else "string"


def signature() -> ModelSignature:
    """Input: the baseline table of the contract. Output: the score table. Param: drivers."""
    inputs = Schema(
        [ColSpec(_signature_type(s), s.name, required=s.required) for s in BASELINE_COLUMNS]
    )
    outputs = Schema(
        [ColSpec("double" if c in FLOAT_SCORE_COLUMNS else "string", c) for c in SCORE_COLUMNS]
    )
    params = ParamSchema([ParamSpec("drivers", "boolean", True)])
    return ModelSignature(inputs, outputs, params)


def to_wire(valid: pd.DataFrame) -> pd.DataFrame:
    """Validated rows in the signature's types (what a REST client sends)."""
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


def problems_message(rejected: pd.DataFrame) -> str:
    """One line per rejected cell (at most ten), for an error answer."""
    lines = [
        f"row {r.row_number}: {r.column} {r.check} (value {r.value!r})"
        for r in rejected.head(MAX_PROBLEMS_IN_MESSAGE).itertuples()
    ]
    more = len(rejected) - len(lines)
    tail = f"; and {more} more" if more > 0 else ""
    return (
        f"{rejected['row_number'].nunique()} row(s) break the data contract: "
        + "; ".join(lines)
        + tail
    )


class CrsRiskModel(PythonModel):
    """Score contract rows with a crsrisk RiskModel stored as the model's artefact."""

    def load_context(self, context: PythonModelContext) -> None:
        self.risk_model = RiskModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, bool] | None = None,
    ) -> pd.DataFrame:
        drivers = True if not params else bool(params.get("drivers", True))
        try:
            result = validate(model_input, with_outcome=False, allow_all_rejected=True)
        except ContractError as exc:  # the table as a whole: empty, a required column missing
            raise MlflowException(str(exc), INVALID_PARAMETER_VALUE) from exc
        if not result.rejected.empty:
            raise MlflowException(problems_message(result.rejected), INVALID_PARAMETER_VALUE)
        scores = self.risk_model.score(result.valid, drivers=drivers)
        return scores.reset_index(drop=True)
