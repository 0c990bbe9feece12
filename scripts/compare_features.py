"""Compare this checkout's FeatureBuilder with another checkout's: same matrices, and speed.

    PYTHONPATH=src python scripts/compare_features.py --other /path/to/other/checkout/src

Simulates a cohort (``simulate_cohort(n, seed)``, validated), fits each builder shape (tree,
linear, linear with splines) on the first two thirds and transforms every row, here and in a
subprocess that imports crsrisk from ``--other``; prints the largest absolute difference per
shape (native categoricals compared as their levels) and fails when one exceeds ``--tol`` or
the column names differ. Then times ``transform`` of one row (``--number`` calls) and of all
rows, both builders in this process (the other checkout's ``features/builder.py`` loaded beside
ours), alternating, best of ``--repeats`` per side.
"""

from __future__ import annotations

import argparse
import importlib.util
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


def _cohort(n: int, seed: int) -> pd.DataFrame:
    from crsrisk.contract.validate import validate
    from crsrisk.simulate.cohort import simulate_cohort

    return validate(simulate_cohort(n, seed).baseline).valid


def matrices(n: int, seed: int) -> dict:
    """Column names and values of each shape's matrix, with this interpreter's crsrisk."""
    from crsrisk.features.builder import FeatureBuilder

    valid = _cohort(n, seed)
    train = valid.iloc[: 2 * len(valid) // 3]
    out = {}
    for kind, splines in SHAPES:
        matrix = FeatureBuilder(kind, splines=splines).fit(train).transform(valid)
        values = {name: (matrix[name].astype(object).where(matrix[name].notna(), None).tolist()
                         if isinstance(matrix[name].dtype, pd.CategoricalDtype)
                         else matrix[name].to_numpy(dtype="float64").tolist())
                  for name in matrix.columns}
        out[f"{kind}{'+splines' if splines else ''}"] = {"columns": list(matrix.columns),
                                                         "values": values}
    return out


def one_row_ms(other: Path, n: int, seed: int, number: int, repeats: int) -> dict:
    """Milliseconds per one-row ``transform``, ours and the other builder's, per shape."""
    from crsrisk.features.builder import FeatureBuilder

    spec = importlib.util.spec_from_file_location(
        "other_builder", other / "crsrisk" / "features" / "builder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    valid = _cohort(n, seed)
    train, one = valid.iloc[: 2 * len(valid) // 3], valid.iloc[[len(valid) - 1]]
    out = {}
    for kind, splines in SHAPES:
        builders = {side: cls(kind, splines=splines).fit(train)
                    for side, cls in (("this", FeatureBuilder), ("other", module.FeatureBuilder))}
        best = {f"{side}{what}": float("inf") for side in builders for what in ("", "_all")}
        for _ in range(repeats):
            for side, builder in builders.items():
                seconds = timeit.timeit(lambda b=builder: b.transform(one), number=number)
                best[side] = min(best[side], seconds / number * 1e3)
                seconds = timeit.timeit(lambda b=builder: b.transform(valid), number=1)
                best[f"{side}_all"] = min(best[f"{side}_all"], seconds * 1e3)
        out[f"{kind}{'+splines' if splines else ''}"] = best
    return out


def compare(ours: dict, theirs: dict, times: dict, tol: float) -> bool:
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
        rows = len(mine["values"][mine["columns"][0]])
        print(f"{shape:16s} columns {len(mine['columns']):3d}  max |difference| {worst:.3g}  "
              f"one-row transform: this {times[shape]['this']:.3f} ms, "
              f"other {times[shape]['other']:.3f} ms; all {rows} rows: "
              f"this {times[shape]['this_all']:.1f} ms, other {times[shape]['other_all']:.1f} ms")
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
        args.dump.write_text(json.dumps(matrices(args.n, args.seed)))
        return
    if args.other is None:
        parser.error("give --other, the src folder of the checkout to compare with")
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "other.json"
        env = {**os.environ, "PYTHONPATH": str(args.other.resolve())}
        subprocess.run([sys.executable, __file__, "--dump", str(dump), "--n", str(args.n),
                        "--seed", str(args.seed)], env=env, check=True)
        theirs = json.loads(dump.read_text())
    ours = matrices(args.n, args.seed)
    times = one_row_ms(args.other.resolve(), args.n, args.seed, args.number, args.repeats)
    sys.exit(0 if compare(ours, theirs, times, args.tol) else 1)


if __name__ == "__main__":
    main()
