"""Spark local[2] scoring throughput against the pandas engine on the same N-row Parquet file.

    python bench/spark_scoring.py --n 2000000 [--drivers on|off|both] [--master local[2]]

Simulates N patients (with ~1 % invalid rows) into one Parquet file, trains and registers a
small XGBoost model in a temporary tracking store, then scores the file with
``crsrisk.scoring.batch.score_file`` (pandas engine, one process) and
``crsrisk.scoring.spark.score_file_spark`` (Spark, ``--master``), and prints rows/s for each and
their
ratio. Both outputs are checked to be equal before any figure is printed.

How the time splits is measured with separate passes over the same chunks:

- pandas engine: a pass that only reads and validates each chunk (``contract.validate``);
  scoring = the full run minus that pass.
- Spark engine: start-up (a new SparkSession in this process, JVM included) and the Python
  workers' start (a first pass minus an identical second one); the counting pass
  that numbers the rows; a "transport" pass whose chunk function does nothing (read, shuffle
  into chunks, Arrow hand-over to the Python workers); a validation pass whose chunk function
  only validates; then the full run. Validation = validation pass - transport pass;
  scoring (model, SHAP drivers, result hand-back and staging write) = full job - validation
  pass; write = the driver appending the staged chunks to the two output files.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from _common import as_text

BATCH = 250_000


def register_model(folder: Path) -> tuple[str, str]:
    """Train XGBoost on 2,000 simulated patients into a tracking store under ``folder``.

    The same fast settings as the test suite's ``trained`` fixture. Returns (tracking URI,
    model URI).
    """
    import logging

    from crsrisk.config import load_train_config
    from crsrisk.contract.grading import resolve_labels
    from crsrisk.contract.validate import validate
    from crsrisk.mlops.registry import connect
    from crsrisk.mlops.tracking import log_and_register
    from crsrisk.modeling.train import train_models
    from crsrisk.simulate.cohort import simulate_cohort

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name, level in (
        ("mlflow", logging.WARNING),
        ("mlflow.pyfunc", logging.ERROR),
        ("alembic", logging.WARNING),
    ):
        logging.getLogger(name).setLevel(level)
    config = load_train_config()
    config = config.model_copy(
        update={
            "candidates": ("xgboost",),
            "cv": config.cv.model_copy(update={"folds": 3}),
            "search": config.search.model_copy(update={"xgboost_trials": 1}),
            # XGBoost whatever the cohort's size, on a held-out split, as the bench measures.
            "validation": config.validation.model_copy(update={"design": "split"}),
            "sample_size": config.sample_size.model_copy(update={"force": ("xgboost",)}),
            "tracking": config.tracking.model_copy(
                update={
                    "uri": f"sqlite:///{folder / 'mlflow.db'}",
                    "artifact_root": str(folder / "mlartifacts"),
                }
            ),
        }
    )
    valid = validate(simulate_cohort(2000, seed=11).baseline).valid
    labels = resolve_labels(valid, None)
    result = train_models(valid, labels.severe, config)
    store = connect(config.tracking)
    registered = log_and_register(
        store,
        result,
        config,
        valid,
        labels.severe,
        {"input_file": "simulated", "mapping_fingerprint": "none"},
    )
    return store.uri, registered.model_uri


def inject_problems(
    frame: pd.DataFrame, rng: np.random.Generator, fraction: float, *, text: bool
) -> pd.DataFrame:
    """Break ``fraction`` of the rows, each with one of several contract rules.

    ``text``: the frame holds CSV text cells, so problems that need text (a word in a number
    column, a fractional ECOG, missing-value words) are added too.
    """
    frame = frame.copy()
    n = len(frame)
    rows = rng.choice(np.arange(1, n), size=max(1, int(n * fraction)), replace=False)
    kinds = rng.integers(0, 10 if text else 7, size=rows.size)
    for row, kind in zip(rows, kinds, strict=True):
        if kind == 0:
            frame.loc[row, "age_years"] = "150" if text else 150.0
        elif kind == 1:
            frame.loc[row, "product"] = "foo-cel"
        elif kind == 2:
            frame.loc[row, "patient_id"] = frame.loc[row - 1, "patient_id"]  # duplicate
        elif kind == 3:
            frame.loc[row, "patient_id"] = None
        elif kind == 4:
            frame.loc[row, "site"] = '=HYPERLINK("x")'
        elif kind == 5:
            frame.loc[row, "weight_kg"] = "0.5" if text else 0.5
        elif kind == 6:
            frame.loc[row, "ferritin_ng_ml"] = "-3" if text else -3.0
        elif kind == 7:
            frame.loc[row, "crp_mg_l"] = "high"
        elif kind == 8:
            frame.loc[row, "ecog"] = "1.5"
        else:
            frame.loc[row, "weight_kg"] = "NA"  # pandas' missing word: valid, not rejected
    return frame




def simulate_file(
    path: Path, n: int, *, seed: int, bad_fraction: float, extra_column: bool = True
) -> None:
    """Write ``n`` simulated patients (outcome columns dropped) to a Parquet or CSV file."""
    from crsrisk.contract.spec import OUTCOME_NAMES
    from crsrisk.simulate.cohort import simulate_cohort

    rng = np.random.default_rng(seed)
    text = str(path).endswith(".csv")
    writer = None
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        batch = simulate_cohort(size, seed=seed + start).baseline.drop(columns=list(OUTCOME_NAMES))
        batch["patient_id"] = [f"P{start + i + 1:08d}" for i in range(size)]
        if extra_column:
            batch["study_arm"] = np.where(np.arange(size) % 2, "A, open-label", "B")
        if text:
            batch = as_text(batch).astype(object)
        batch = inject_problems(batch, rng, bad_fraction, text=text)
        if text:
            batch.to_csv(path, mode="a" if start else "w", header=not start, index=False)
            continue
        table = pa.Table.from_pandas(batch, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def compare(
    pandas_out: Path, spark_out: Path, pandas_rejected: Path, spark_rejected: Path
) -> dict[str, object]:
    """Row-for-row comparison of the two engines' score and rejected files."""
    from crsrisk.io import read_table

    a, b = pd.read_parquet(pandas_out), pd.read_parquet(spark_out)
    same_rows = len(a) == len(b) and a["patient_id"].tolist() == b["patient_id"].tolist()
    risk = (a["risk"] - b["risk"]).abs().max() if same_rows else float("nan")

    def mismatches(column: str) -> int:
        if not same_rows:
            return -1
        x, y = a[column].astype("str"), b[column].astype("str")
        return int((x.where(a[column].notna(), "<NA>") != y.where(b[column].notna(), "<NA>")).sum())

    others = [c for c in a.columns if c not in ("risk",)]
    ra, rb = read_table(pandas_rejected), read_table(spark_rejected)
    return {
        "rows scored": (len(a), len(b)),
        "same patients in the same order": same_rows,
        "same columns": list(a.columns) == list(b.columns),
        "max |risk difference|": float(risk),
        "tier mismatches": mismatches("risk_tier"),
        "driver mismatches": mismatches("top_drivers"),
        "other column mismatches": sum(
            mismatches(c) for c in others if c not in ("risk_tier", "top_drivers")
        ),
        "rejected rows (pandas, spark)": (
            int(ra["row_number"].nunique()),
            int(rb["row_number"].nunique()),
        ),
        "rejected tables identical": bool(ra.equals(rb)),
    }


def score_both(
    data: Path,
    folder: Path,
    name: str,
    model,
    *,
    drivers: bool,
    master: str,
    chunk_size: int,
    timings: dict[str, float] | None = None,
) -> tuple[object, float, float, dict[str, object]]:
    """Score ``data`` with the pandas engine, then the Spark one, into ``folder``.

    Returns the pandas engine's summary, each engine's seconds and their comparison.
    """
    from crsrisk.scoring.batch import score_file
    from crsrisk.scoring.spark import score_file_spark

    p_out, p_rej = folder / f"pandas-{name}.parquet", folder / f"pandas-{name}.rejected.csv"
    s_out, s_rej = folder / f"spark-{name}.parquet", folder / f"spark-{name}.rejected.csv"
    mark = time.perf_counter()
    summary = score_file(data, p_out, model=model, rejected_path=p_rej, drivers=drivers,
                         chunk_size=chunk_size, progress=False)
    pandas_s = time.perf_counter() - mark
    mark = time.perf_counter()
    score_file_spark(data, s_out, model=model, rejected_path=s_rej, drivers=drivers,
                     master=master, mapping=None, chunk_size=chunk_size, timings=timings)
    spark_s = time.perf_counter() - mark
    return summary, pandas_s, spark_s, compare(p_out, s_out, p_rej, s_rej)


def equal(result: dict[str, object]) -> bool:
    return (
        result["same patients in the same order"]
        and result["same columns"]
        and result["max |risk difference|"] <= 1e-9
        and result["tier mismatches"] == 0
        and result["driver mismatches"] == 0
        and result["other column mismatches"] == 0
        and result["rejected tables identical"]
    )


def _validate_only(raw: pd.DataFrame, chunk: int, offset: int) -> pd.DataFrame:
    from crsrisk.contract.validate import validate

    result = validate(raw, with_outcome=False, row_offset=offset, allow_all_rejected=True)
    return pd.DataFrame({"n": [len(result.valid)]})


def _nothing(raw: pd.DataFrame, chunk: int, offset: int) -> pd.DataFrame:
    return pd.DataFrame({"n": [len(raw)]})


def spark_pass(spark, data: Path, function, chunk_size: int) -> float:
    """Seconds for one pass of ``function`` over the file's chunks (counting included)."""
    from pyspark.sql import functions as F

    from crsrisk.scoring.spark import _map_chunks, number_rows, read_table_spark

    start = time.perf_counter()
    with _sql_conf_utc(spark):
        frame = read_table_spark(spark, data)
        numbered, _ = number_rows(frame)
        names = tuple(c for c in frame.columns if not c.startswith("_crsrisk"))
        done = _map_chunks(numbered, names, function, "n long", chunk_size)
        done.agg(F.sum("n")).collect()
    return time.perf_counter() - start


def _sql_conf_utc(spark):
    from crsrisk.scoring.spark import _sql_conf

    return _sql_conf(spark, {"spark.sql.session.timeZone": "UTC"})


def report(
    label: str,
    n: int,
    master: str,
    summary,
    result: dict,
    *,
    pandas_total: float,
    pandas_validation: float,
    spark_total: float,
    start_up: float,
    warm_up: float,
    transport: float,
    spark_validation: float,
    timings: dict[str, float],
) -> None:
    """Print one mode's figures: throughputs, ratio, and the split of the Spark time."""
    with_start = spark_total + start_up + warm_up
    counting = timings["number_rows"]
    lines = [
        f"\n== {label}: {summary.n_scored:,} scored, {summary.n_rejected:,} rejected",
        f"pandas engine (1 process)     {pandas_total:8.1f} s {n / pandas_total:10,.0f} rows/s",
        f"  read + validate             {pandas_validation:8.1f} s",
        f"  scoring (model, drivers, write) {pandas_total - pandas_validation:4.1f} s",
        f"spark {master:<11} engine     {spark_total:8.1f} s {n / spark_total:10,.0f} rows/s"
        f"  (counting session start-up: {with_start:.1f} s, {n / with_start:,.0f} rows/s)",
        f"  session start-up (once)     {start_up:8.1f} s   (JVM, SparkContext)",
        f"  Python workers' start (once) {warm_up:7.1f} s   (first pass - second pass)",
        f"  model load + input probe    {timings['load']:8.1f} s",
        f"  row numbering (count pass)  {counting:8.1f} s",
        f"  distributed job             {timings['score']:8.1f} s, of which",
        f"    read, shuffle, Arrow      {transport - counting:8.1f} s   (transport pass - count)",
        f"    validation                {spark_validation - transport:8.1f} s   "
        "(validation pass - transport pass)",
        f"    scoring and hand-back     {timings['score'] - (spark_validation - counting):8.1f} s"
        "   (job - validation pass + count)",
        f"  write the two files         {timings['write']:8.1f} s   (driver)",
        f"spark/pandas throughput: {pandas_total / spark_total:.2f}x "
        f"({pandas_total / with_start:.2f}x counting session start-up)",
        "equality: " + "; ".join(f"{k} {v}" for k, v in result.items()),
    ]
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--drivers", choices=("on", "off", "both"), default="both")
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from crsrisk.contract.validate import validate
    from crsrisk.io import iter_table
    from crsrisk.mlops.loading import load_model

    with tempfile.TemporaryDirectory(prefix="crsrisk-spark-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        data = folder / "patients.parquet"
        simulate_file(data, args.n, seed=args.seed, bad_fraction=args.bad_fraction)
        uri, model_uri = register_model(folder / "registry")
        os.environ["MLFLOW_TRACKING_URI"] = uri
        risk_model = load_model(model_uri)
        print(
            f"{args.n:,} simulated patients in {data.name} "
            f"({data.stat().st_size / 2**20:,.0f} MiB, {pq.ParquetFile(data).num_row_groups} "
            f"row groups), model {model_uri}; set-up {time.perf_counter() - start:.0f} s; "
            f"chunks of {args.chunk_size:,} rows; {os.cpu_count()} CPUs here"
        )

        mark = time.perf_counter()
        for chunk in iter_table(data, args.chunk_size):
            validate(
                chunk, with_outcome=False, row_offset=int(chunk.index[0]), allow_all_rejected=True
            )
        pandas_validation = time.perf_counter() - mark

        from crsrisk.scoring.spark import spark_session

        mark = time.perf_counter()
        spark = spark_session(args.master)
        start_up = time.perf_counter() - mark
        first_pass = spark_pass(spark, data, _nothing, args.chunk_size)  # starts the workers
        transport = spark_pass(spark, data, _nothing, args.chunk_size)
        spark_validation = spark_pass(spark, data, _validate_only, args.chunk_size)

        modes = {"on": [True], "off": [False], "both": [False, True]}[args.drivers]
        failed = False
        for drivers in modes:
            label = "with SHAP drivers" if drivers else "without drivers"
            timings: dict[str, float] = {}
            summary, pandas_total, spark_total, result = score_both(
                data, folder, "on" if drivers else "off", risk_model, drivers=drivers,
                master=args.master, chunk_size=args.chunk_size, timings=timings)
            failed |= not equal(result)

            report(
                label,
                args.n,
                args.master,
                summary,
                result,
                pandas_total=pandas_total,
                pandas_validation=pandas_validation,
                spark_total=spark_total,
                start_up=start_up,
                warm_up=first_pass - transport,
                transport=transport,
                spark_validation=spark_validation,
                timings=timings,
            )
        spark.stop()
    if failed:
        print("FAILED: the engines differ")
        sys.exit(1)


if __name__ == "__main__":
    main()
