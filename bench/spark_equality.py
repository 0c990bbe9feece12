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
from pathlib import Path

from spark_scoring import equal, register_model, score_both, simulate_file


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--chunk-size", type=int, default=50_000,
                        help="smaller than --n, so that chunk boundaries are crossed")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()

    from crsrisk.mlops.loading import load_model
    from crsrisk.scoring.spark import spark_session

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
            _, pandas_s, spark_s, result = score_both(
                data, folder, fmt, risk_model, drivers=True, master=args.master,
                chunk_size=args.chunk_size)
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
