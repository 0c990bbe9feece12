"""MLflow: tracking runs, the model registry, the pyfunc model and offline export."""
