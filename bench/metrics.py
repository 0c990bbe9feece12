"""Speed of the vectorised bootstrap against a naive loop of point metrics, same resamples.

Usage: ``python bench/metrics.py --n 5000 --n-boot 1000 [--naive 50]``

Times `bootstrap_metrics` (all resamples in one vectorised pass) and, as the reference in the
same run, `point_metrics` called on each of the first ``--naive`` of the same resamples, scaled
to ``--n-boot``. Prints both, their ratio, and the largest difference between the two paths on
the resamples they share (it should be ~1e-12).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of  # noqa: E402
from crsrisk.evaluation.metrics import bootstrap_metrics, point_metrics  # noqa: E402
from crsrisk.evaluation.metrics.bootstrap import (  # noqa: E402
    bootstrap_replicates,
    resample_blocks,
)

THRESHOLDS = {"high": 0.2, "low": 0.03}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--naive", type=int, default=50, help="resamples the naive loop times")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    p = expit(rng.normal(-2.0, 1.0, args.n))
    y = (rng.random(args.n) < p).astype(int)

    fast, _ = best_of(3, lambda: bootstrap_metrics(y, p, THRESHOLDS, n_boot=args.n_boot,
                                                   seed=args.seed))
    resamples = np.vstack(list(resample_blocks(args.n, args.n_boot, args.seed)))[:args.naive]
    naive_part, naive = best_of(1, lambda: [point_metrics(y[i], p[i], THRESHOLDS)
                                            for i in resamples])
    naive_total = naive_part * args.n_boot / len(resamples)
    replicates = bootstrap_replicates(y, p, THRESHOLDS, args.n_boot, args.seed)
    worst = 0.0
    for row, expected in enumerate(naive):
        for metric, values in replicates.items():
            if not (math.isnan(expected[metric]) and math.isnan(values[row])):
                worst = max(worst, abs(values[row] - expected[metric]))
    print(f"n={args.n:,}, {args.n_boot} resamples, {len(THRESHOLDS)} thresholds")
    print(f"  bootstrap_metrics (vectorised)       {fast:8.2f} s")
    print(f"  point_metrics per resample (naive)   {naive_total:8.2f} s "
          f"(timed on {len(resamples)} resamples, scaled)")
    print(f"  ratio naive / vectorised             {naive_total / fast:8.1f}x")
    print(f"  largest difference on shared resamples {worst:.2e}")


if __name__ == "__main__":
    main()
