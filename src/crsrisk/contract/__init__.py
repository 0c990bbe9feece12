"""The data contract: column specs, products, validation, site mappings, grading."""

import warnings

# pandera imports pyspark.pandas whenever pyspark is installed (the [spark] extra), and pyspark
# then warns about pandas 3 although no Spark runs. Importing pandera here, first, keeps that
# warning from a user of the Python API or pyfunc who never asked for Spark.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                            category=FutureWarning)
    import pandera.pandas  # noqa: F401
