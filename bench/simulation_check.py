"""Check the synthetic cohort against its literature targets.

Usage: ``python bench/simulation_check.py --n 100000 --seed 1 [--config configs/simulate.yaml]``

Prints the time to simulate against a reference timed in the same run (drawing as many random
numbers as the simulator does and framing them as a table of the cohort's shape: the floor any
simulator of this cohort pays), a per-product table of severe (ASTCT grade >= 3) CRS rates
against their targets, the AUROC of m-EASIX on CAR-T and on all patients, and the oracle AUROC
of the true risk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of  # noqa: E402
from crsrisk.simulate.cohort import (  # noqa: E402
    SEVERE_TARGET,
    load_simulation_config,
    reference_intercepts,
    simulate_cohort,
)

# Random numbers the simulator draws per patient (counted in crsrisk/simulate/steps.py).
DRAWS_PER_PATIENT = 62

ASTCT_HYPOTENSION = {"none": 0, "no_vasopressor": 1, "one_vasopressor": 2,
                     "multiple_vasopressors": 3}  # fmt: skip
ASTCT_HYPOXIA = {"none": 0, "low_flow": 1, "high_flow": 2, "positive_pressure": 3}


def astct_severe(events: pd.DataFrame) -> np.ndarray:
    """ASTCT grade >= 3 from raw events: one vasopressor, high-flow oxygen or worse, or death."""
    worst = np.maximum(
        events["hypotension"].map(ASTCT_HYPOTENSION).to_numpy(dtype=int),
        events["hypoxia"].map(ASTCT_HYPOXIA).to_numpy(dtype=int),
    )
    fever = events["fever"].to_numpy(dtype=bool)
    return events["crs_death"].to_numpy(dtype=bool) | (fever & (worst >= 2))


def bare_draws(n: int, n_columns: int) -> pd.DataFrame:
    """The reference: as many random numbers as the simulator draws, framed as a table."""
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((DRAWS_PER_PATIENT, n))
    return pd.DataFrame({f"c{i}": np.round(draws[i % DRAWS_PER_PATIENT], 2)
                         for i in range(n_columns)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", default=None, help="simulate.yaml-style settings")
    args = parser.parse_args()
    config = load_simulation_config(args.config)

    reference_intercepts()  # calibrated once per process; not part of a cohort's cost
    elapsed, cohort = best_of(3, lambda: simulate_cohort(args.n, args.seed, config=config))
    floor, _ = best_of(3, lambda: bare_draws(args.n, len(cohort.baseline.columns)))
    print(f"simulated n={args.n:,} (seed {args.seed}) in {elapsed:.2f} s; reference (draw "
          f"{DRAWS_PER_PATIENT} numbers per patient, frame {len(cohort.baseline.columns)} "
          f"columns) {floor:.2f} s; ratio {elapsed / floor:.1f}x")

    b = cohort.baseline
    severe = astct_severe(cohort.events)
    by_product = pd.DataFrame({"product": b["product"].to_numpy(), "severe": severe})
    table = by_product.groupby("product")["severe"].agg(n="size", simulated="mean")
    table.insert(1, "target", pd.Series(SEVERE_TARGET))
    table["diff_pp"] = 100 * (table["simulated"] - table["target"])
    table = table.sort_values("n", ascending=False)
    print()
    print("Severe CRS (ASTCT grade >= 3) by product")
    print(
        table.to_string(
            formatters={
                "target": "{:.3f}".format,
                "simulated": "{:.3f}".format,
                "diff_pp": "{:+.2f}".format,
            }
        )
    )
    print(f"overall: simulated {severe.mean():.3f}, mean true risk {cohort.true_risk.mean():.3f}")

    m_easix = (b["ldh_u_l"] * (b["crp_mg_l"] / 10) / b["platelets_1e9_l"]).to_numpy()
    complete = ~np.isnan(m_easix)
    car_t = (b["therapy_class"] == "CAR-T").to_numpy()
    print()
    print("AUROC for ASTCT grade >= 3 (m-EASIX on patients with LDH, CRP and platelets)")
    rows = [
        ("m-EASIX, CAR-T", roc_auc_score(severe[complete & car_t], m_easix[complete & car_t]),
         int((complete & car_t).sum())),
        ("m-EASIX, all", roc_auc_score(severe[complete], m_easix[complete]),
         int(complete.sum())),
        ("oracle (true risk), CAR-T", roc_auc_score(severe[car_t], cohort.true_risk[car_t]),
         int(car_t.sum())),
        ("oracle (true risk), all", roc_auc_score(severe, cohort.true_risk), len(severe)),
    ]  # fmt: skip
    print(pd.DataFrame(rows, columns=["score", "auroc", "n"]).to_string(index=False))


if __name__ == "__main__":
    main()
