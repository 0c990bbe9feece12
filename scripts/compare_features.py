"""Compare this checkout's FeatureBuilder with another checkout's: same matrices, single-row time.

    PYTHONPATH=src python scripts/compare_features.py --other /path/to/other/checkout/src

Simulates a cohort (``simulate_cohort(n, seed)``, validated), fits each builder shape (tree,
linear, linear with splines) on the first two thirds and transforms every row, here and in a
subprocess that imports crsrisk from ``--other``; prints the largest absolute difference per
shape (native categoricals compared as their levels) and fails when one exceeds ``--tol`` or
the column names differ. Then times ``transform`` of one row (best of ``--repeats`` runs of
``--number`` calls, timeit) on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

import numpy as np
import pandas as pd

SHAPES = (("tree", False), ("linear", False), ("linear", True))


def matrices(n: int, seed: int, number: int, repeats: int) -> dict:
    """Matrices and single-row transform times of this interpreter's crsrisk."""
    from crsrisk.contract.validate import validate
    from crsrisk.features.builder import FeatureBuilder
    from crsrisk.simulate.cohort import simulate_cohort

    valid = validate(simulate_cohort(n, seed).baseline).valid
    train = valid.iloc[: 2 * len(valid) // 3]
    one = valid.iloc[[len(valid) - 1]]
    out = {}
    for kind, splines in SHAPES:
        builder = FeatureBuilder(kind, splines=splines).fit(train)
        matrix = builder.transform(valid)
        values = {name: (matrix[name].astype(object).where(matrix[name].notna(), None).tolist()
                         if isinstance(matrix[name].dtype, pd.CategoricalDtype)
                         else matrix[name].to_numpy(dtype="float64").tolist())
                  for name in matrix.columns}
        seconds = min(timeit.repeat(lambda b=builder: b.transform(one), number=number,
                                    repeat=repeats)) / number
        out[f"{kind}{'+splines' if splines else ''}"] = {
            "columns": list(matrix.columns), "values": values, "one_row_ms": seconds * 1e3}
    return out


def compare(ours: dict, theirs: dict, tol: float) -> bool:
    """Print the differences per shape; True when every shape agrees within ``tol``."""
    fine = True
    for shape, mine in ours.items():
        other = theirs[shape]
        if mine["columns"] != other["columns"]:
            print(f"{shape}: column names differ")
            fine = False
            continue
        worst = 0.0
        for name in mine["columns"]:
            a, b = mine["values"][name], other["values"][name]
            if a and isinstance(next((v for v in a + b if v is not None), 0.0), str):
                if a != b:
                    print(f"{shape}: categorical {name} differs")
                    fine = False
                continue
            x, y = np.array(a, dtype="float64"), np.array(b, dtype="float64")
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                print(f"{shape}: missing values of {name} differ")
                fine = False
                continue
            if x.size and (~np.isnan(x)).any():
                worst = max(worst, float(np.nanmax(np.abs(x - y))))
        fine &= worst <= tol
        print(f"{shape:16s} columns {len(mine['columns']):3d}  max |difference| {worst:.3g}  "
              f"one-row transform: this {mine['one_row_ms']:.3f} ms, "
              f"other {other['one_row_ms']:.3f} ms")
    return fine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", type=Path, help="the src folder of the other checkout")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tol", type=float, default=1e-9)
    parser.add_argument("--number", type=int, default=200, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings (best is kept)")
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # the subprocess's answer
    args = parser.parse_args()
    if args.dump:
        args.dump.write_text(json.dumps(matrices(args.n, args.seed, args.number, args.repeats)))
        return
    if args.other is None:
        parser.error("give --other, the src folder of the checkout to compare with")
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "other.json"
        env = {**os.environ, "PYTHONPATH": str(args.other.resolve())}
        subprocess.run([sys.executable, __file__, "--dump", str(dump), "--n", str(args.n),
                        "--seed", str(args.seed), "--number", str(args.number),
                        "--repeats", str(args.repeats)], env=env, check=True)
        theirs = json.loads(dump.read_text())
    ours = matrices(args.n, args.seed, args.number, args.repeats)
    sys.exit(0 if compare(ours, theirs, args.tol) else 1)


if __name__ == "__main__":
    main()
