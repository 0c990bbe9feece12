"""Loading a RiskModel: from the registry (a models:/ URI) or from an exported folder."""

from __future__ import annotations

from pathlib import Path

from crsrisk.config import DEFAULT_MODEL_URI
from crsrisk.contract.spec import CONTRACT_VERSION
from crsrisk.errors import ModelError
from crsrisk.mlops.export import load_exported, looks_exported
from crsrisk.mlops.registry import existing_store, use_store
from crsrisk.modeling.riskmodel import RiskModel

__all__ = ["DEFAULT_MODEL", "ModelError", "load_model"]

DEFAULT_MODEL = DEFAULT_MODEL_URI




def load_model(uri: str | Path = DEFAULT_MODEL) -> RiskModel:
    """The RiskModel behind a registered model URI or an exported model directory.

    Parameters
    ----------
    uri
        ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` (any MLflow model URI), or a folder
        written by ``crsrisk export`` (checked against its manifest; no tracking store needed).

    Returns
    -------
    RiskModel

    Raises
    ------
    ModelError
        The model cannot be found or loaded, is not a crsrisk model, or was built for another
        data contract version.
    crsrisk.mlops.export.ExportError
        An exported folder fails its manifest check.
    """

    text = str(uri)
    if looks_exported(uri):
        model = load_exported(uri)
    elif "://" in text or text.startswith(("models:", "runs:")):
        model = _load_registered(text)
    else:
        raise ModelError(
            f"{uri} is neither a registered model URI (models:/NAME@ALIAS or "
            "models:/NAME/VERSION) nor an exported model folder: check the path, or list the "
            "registered versions with crsrisk models."
        )
    if getattr(model, "contract_version", None) != CONTRACT_VERSION:
        raise ModelError(
            f"The model {uri} was built for data contract version "
            f"{getattr(model, 'contract_version', 'unknown')}, this crsrisk uses version "
            f"{CONTRACT_VERSION}: retrain it on contract version {CONTRACT_VERSION} data."
        )
    return model


def _load_registered(uri: str) -> RiskModel:
    import mlflow
    from mlflow.exceptions import MlflowException


    store = existing_store(uri)
    # models:/ URIs resolve in the registry: point it at the same store, whatever an earlier
    # connect() in this process chose.
    use_store(store)
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise ModelError(
            f"The model {uri} could not be loaded ({type(exc).__name__}): train one with "
            "crsrisk train, or give --model a registered URI or an exported model directory."
        ) from exc
    model = getattr(pyfunc.unwrap_python_model(), "risk_model", None)
    if not isinstance(model, RiskModel):
        raise ModelError(f"{uri} is an MLflow model but not a crsrisk risk model.")
    return model
