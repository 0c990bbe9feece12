"""The Spark engine equals the pandas engine row for row, on N simulated patients.

    python bench/spark_equality.py --n 100000

Writes the same simulated patients (about 1 % broken by one contract rule each, plus an extra
column carried through) as a CSV file (text cells: also words in number columns, fractional
ECOG, missing-value words, quoted commas) and as a Parquet file (typed), scores each with both
engines (SHAP drivers on), and prints the largest risk difference, tier and driver mismatches
and whether the rejected tables are identical. Exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from spark_scoring import compare, equal, register_model, simulate_file


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()

    from crsrisk.scoring import load_model, score_file
    from crsrisk.spark import score_file_spark, spark_session

    failed = False
    with tempfile.TemporaryDirectory(prefix="crsrisk-spark-equality-") as tmp:
        folder = Path(tmp)
        uri, model_uri = register_model(folder / "registry")
        os.environ["MLFLOW_TRACKING_URI"] = uri
        risk_model = load_model(model_uri)
        spark = spark_session(args.master)
        for fmt in ("csv", "parquet"):
            data = folder / f"patients.{fmt}"
            simulate_file(data, args.n, seed=args.seed, bad_fraction=args.bad_fraction)
            p_out, p_rej = folder / f"pandas-{fmt}.parquet", folder / f"pandas-{fmt}.rejected.csv"
            s_out, s_rej = folder / f"spark-{fmt}.parquet", folder / f"spark-{fmt}.rejected.csv"
            mark = time.perf_counter()
            score_file(
                data,
                p_out,
                model=risk_model,
                rejected_path=p_rej,
                drivers=True,
                chunk_size=args.chunk_size,
                progress=False,
            )
            pandas_s = time.perf_counter() - mark
            mark = time.perf_counter()
            score_file_spark(
                data,
                s_out,
                model=model_uri,
                rejected_path=s_rej,
                drivers=True,
                master=args.master,
                mapping=None,
                chunk_size=args.chunk_size,
            )
            spark_s = time.perf_counter() - mark
            result = compare(p_out, s_out, p_rej, s_rej)
            ok = equal(result)
            failed |= not ok
            print(
                f"{fmt:<8} {args.n:,} rows, chunks of {args.chunk_size:,} "
                f"(pandas {pandas_s:.0f} s, spark {args.master} {spark_s:.0f} s): "
                + ("EQUAL" if ok else "DIFFERENT")
            )
            for key, value in result.items():
                print(f"  {key}: {value}")
        spark.stop()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
