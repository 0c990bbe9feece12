"""The data contract: column specs, products, validation, site mappings, grading."""

import warnings

# pandera imports pyspark.pandas whenever pyspark is installed (the [spark] extra), and pyspark
# then warns about pandas 3, once, although no Spark runs. crsrisk's Spark path is tested at the
# pinned pandas, so the warning tells no user anything: importing pandera here, first, keeps it
# from the CLI, the Python API and pyfunc alike (Spark's workers: crsrisk.scoring.spark_read).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                            category=FutureWarning)
    import pandera.pandas  # noqa: F401
