"""REST scoring of a registered or exported model, on MLflow's scoring protocol.

``POST /invocations`` takes the baseline table as MLflow's scoring server does (JSON
``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs``, with optional
``params``; or CSV) and answers ``{"predictions": [...]}``: one record per input row, in order,
with ``status`` "scored" or "rejected" and ``problems`` for a rejected row (see
`crsrisk.mlops.pyfunc`). The answer is strict JSON (null, never NaN). A request that is not a
usable table gets HTTP 400 (415 for a content type other than JSON or CSV) with
``{"error_code", "message"}``: one sentence naming the problem, never the request's rows.
``GET /ping`` and ``/health`` answer 200 once the model is loaded; ``GET /version`` gives the
model's name and version.

Unlike ``mlflow models serve``, whose error answers repeat the request (other patients' rows
included), this server answers from the model's own checks.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from crsrisk.errors import ContractError

__all__ = ["TABLE_KEYS", "RequestError", "parse_request", "to_json", "create_app"]

TABLE_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_log = logging.getLogger(__name__)


class RequestError(ContractError):
    """A request that is not a usable table; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _table_from_json(payload: object) -> tuple[object, dict[str, Any] | None]:
    if not isinstance(payload, dict):
        raise RequestError(
            "The request must be a JSON object with one of the keys "
            f"{', '.join(TABLE_KEYS)} holding the baseline table."
        )
    keys = [k for k in TABLE_KEYS if k in payload]
    unknown = sorted(k for k in payload if k not in (*TABLE_KEYS, "params"))
    if len(keys) != 1 or unknown:
        raise RequestError(
            f"The request must hold exactly one of {', '.join(TABLE_KEYS)} (and optionally "
            f"params); it holds {', '.join(map(repr, keys + unknown)) or 'none of them'}."
        )
    params = payload.get("params")
    if params is not None and not isinstance(params, dict):
        raise RequestError('params must be a JSON object, e.g. {"drivers": false}.')
    data = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or not (
            isinstance(data.get("data"), list)
            and all(isinstance(row, list) for row in data["data"])
        ):
            raise RequestError(
                'dataframe_split must be {"columns": [names], "data": [[row values], ...]}.'
            )
        if any(len(row) != len(data["columns"]) for row in data["data"]):
            raise RequestError(
                f"Every row of dataframe_split must have {len(data['columns'])} values, one per "
                "column."
            )
        return pd.DataFrame(data["data"], columns=data["columns"]), params
    if isinstance(data, dict) and keys[0] == "inputs":
        if not all(isinstance(v, list) for v in data.values()) or len(
            {len(v) for v in data.values()}
        ) > 1:
            raise RequestError("inputs as columns must map each column name to a list of values, "
                               "all of the same length.")
        return pd.DataFrame(data), params
    return data, params


def parse_request(body: bytes, content_type: str | None) -> tuple[object, dict[str, Any] | None]:
    """The table (a DataFrame, or records for the model to read) and params of a request.

    Raises
    ------
    RequestError
        Not UTF-8 JSON or CSV, or not shaped as one of MLflow's table formats.
    """
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime == "text/csv":
        try:
            return pd.read_csv(io.BytesIO(body), dtype="str"), None
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"The CSV body cannot be read ({type(exc).__name__}).") from None
    if mime != "application/json":
        raise RequestError(
            f"Content type {mime or 'none'!r} is not served: send application/json or text/csv.",
            status=415,
        )
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise RequestError("The request body is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"The request body is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno})."
        ) from None
    return _table_from_json(payload)


def _cell(value: object) -> object:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    return value


def to_json(answers: pd.DataFrame) -> str:
    """``{"predictions": [one object per row]}``, strict JSON: missing values as null."""
    columns = list(answers.columns)
    rows = [
        {name: _cell(value) for name, value in zip(columns, row, strict=True)}
        for row in answers.itertuples(index=False, name=None)
    ]
    return json.dumps({"predictions": rows}, allow_nan=False, ensure_ascii=False)


def _error(message: str, status: int):
    from starlette.responses import Response

    code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
    body = json.dumps({"error_code": code, "message": message})
    return Response(body, status_code=status, media_type="application/json")


def create_app(model, name: str, version: str):
    """The ASGI app serving ``model`` (a loaded `mlflow.pyfunc.PyFuncModel` of crsrisk)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    def answer(body: bytes, content_type: str | None) -> str:
        table, params = parse_request(body, content_type)
        return to_json(model.predict(table, params=params))

    async def invocations(request: Request) -> Response:
        body = await request.body()
        try:
            text = await asyncio.to_thread(answer, body, request.headers.get("content-type"))
        except RequestError as exc:
            return _error(str(exc), exc.status)
        except ContractError as exc:  # the table as a whole: no rows, a required column absent
            return _error(str(exc), 400)
        except MlflowException as exc:  # params that break the signature (drivers: "yes")
            return _error(exc.message, 400)
        except Exception as exc:  # noqa: BLE001 - answer, log, keep serving
            _log.error("scoring failed with %s", type(exc).__name__, exc_info=True)
            return _error(f"The model failed on this request ({type(exc).__name__}); the "
                          "server log has the details.", 500)
        return Response(text, media_type="application/json")

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="application/json")

    async def about(request: Request) -> Response:
        return Response(json.dumps({"model_name": name, "model_version": version}),
                        media_type="application/json")

    return Starlette(routes=[
        Route("/invocations", invocations, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/version", about, methods=["GET"]),
    ])
