"""The model's code as MLflow logs it ("models from code"): no pickle of the model is written.

`crsrisk.mlops.tracking.log_risk_model` passes this file's path to `mlflow.pyfunc.log_model`;
MLflow copies it into the model and runs it on load, which names the PythonModel to use. The
fitted state is the ``risk_model`` artefact, loaded by `CrsRiskModel.load_context`.
"""

from mlflow.models import set_model

from crsrisk.mlops.pyfunc import CrsRiskModel

__all__: list[str] = []

set_model(CrsRiskModel())
