"""Validation throughput on N rows, against pandera's bare `schema.validate` on the same frame.

    python bench/validation.py --n 1000000

crsrisk's validate parses text cells, runs the same pandera schema, adds cross-column rules,
builds the rejected table and casts categoricals; the ratio says what that extra work costs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt

import numpy as np
import pandas as pd
import pandera.pandas as pa

from _common import as_text, best_of
from crsrisk.contract.validate import baseline_schema, validate
from crsrisk.simulate.cohort import simulate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    args = parser.parse_args()

    baseline = simulate_cohort(args.n, seed=7).baseline
    rng = np.random.default_rng(0)
    bad = rng.random(args.n) < args.bad_fraction
    baseline.loc[bad, "age_years"] = 150.0  # a sprinkle of row problems for the rejected table
    text = as_text(baseline)
    today = dt.date.today()

    # The reference: the same pandera schema on the already-typed frame (strings for categories).
    typed = validate(text, today=today).valid
    reference_frame = pd.concat([typed, baseline.loc[bad]]).sort_index()
    reference_frame = reference_frame.assign(**{
        c: reference_frame[c].astype("str").where(reference_frame[c].notna())
        for c in reference_frame.columns
        if isinstance(reference_frame[c].dtype, pd.CategoricalDtype)
    })
    schema = baseline_schema(today, True)

    def bare() -> None:
        with contextlib.suppress(pa.errors.SchemaErrors):
            schema.validate(reference_frame, lazy=True)

    ours_text, _ = best_of(args.repeats, lambda: validate(text, today=today))
    ours_typed, _ = best_of(args.repeats, lambda: validate(baseline, today=today))
    reference, _ = best_of(args.repeats, bare)
    result = validate(text, today=today)
    print(f"rows: {args.n:,}  rejected rows: {result.n_rejected_rows:,}")
    print(f"pandera schema.validate (typed frame, reference): {reference:7.2f} s "
          f"({args.n / reference:,.0f} rows/s)")
    print(f"crsrisk validate, text cells (CSV input):         {ours_text:7.2f} s "
          f"({args.n / ours_text:,.0f} rows/s)  ratio {ours_text / reference:.2f}x")
    print(f"crsrisk validate, typed frame (Parquet input):    {ours_typed:7.2f} s "
          f"({args.n / ours_typed:,.0f} rows/s)  ratio {ours_typed / reference:.2f}x")


if __name__ == "__main__":
    main()
