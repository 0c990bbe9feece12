"""How close the trained model comes to the truth: external test against the oracle and m-EASIX.

    python bench/model_quality.py                      # 10,000 to train, 5,000 to test (make bench)
    python bench/model_quality.py --n-train 400        # the small-data case (bootstrap design)
    python bench/model_quality.py --n-train 400 --repeats 20   # fewer bootstrap repeats

Trains every candidate of configs/train.yaml with `train_models` on N simulated patients (seed
1), exactly as `crsrisk train` does, then scores M patients simulated with another seed. The
reference in the same run is the oracle: each test patient's true probability from the
simulator, the best AUROC any model can reach on those rows. Targets (10,000 / 5,000): AUROC
within 0.02 of the oracle, at least 0.05 above m-EASIX, calibration slope 0.85-1.15 and
intercept within +-0.2. Each candidate's CV-to-test gap is printed beside it.

Below 200 events in the smaller class training develops on every row and estimates optimism by
bootstrapping the whole procedure; its optimism-corrected AUROC and calibration slope are then
printed next to the external ones (how close the internal estimate came). The sample-size table
(Riley et al.) is printed first.
"""

from __future__ import annotations

import argparse
import time

from sklearn.metrics import roc_auc_score

from crsrisk.config import load_train_config
from crsrisk.contract.grading import resolve_labels
from crsrisk.contract.validate import validate
from crsrisk.evaluation.metrics import calibration_slope_intercept
from crsrisk.modeling.train import train_models
from crsrisk.simulate.cohort import simulate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=5_000)
    parser.add_argument("--train-seed", type=int, default=1)
    parser.add_argument("--test-seed", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None,
                        help="bootstrap repeats (default: the train config's)")
    parser.add_argument("--internal-external", default=None,
                        choices=["auto", "site", "year", "both", "off"],
                        help="internal-external cross-validation (default: the train config's)")
    parser.add_argument("--force", default="",
                        help="comma-separated candidates to fit even below Riley's minimum")
    args = parser.parse_args()

    config = load_train_config()
    if args.repeats:
        config = config.model_copy(update={"validation": config.validation.model_copy(
            update={"bootstrap_repeats": args.repeats})})
    if args.internal_external:
        config = config.model_copy(update={"validation": config.validation.model_copy(
            update={"internal_external": args.internal_external})})
    if args.force:
        config = config.model_copy(update={"sample_size": config.sample_size.model_copy(
            update={"force": [name.strip() for name in args.force.split(",")]})})
    train_valid = validate(simulate_cohort(args.n_train, seed=args.train_seed).baseline).valid
    start = time.perf_counter()
    result = train_models(train_valid, resolve_labels(train_valid).severe, config)
    seconds = time.perf_counter() - start

    test = simulate_cohort(args.n_test, seed=args.test_seed)
    test_valid = validate(test.baseline).valid
    y = resolve_labels(test_valid).severe.astype(int).to_numpy()
    oracle = roc_auc_score(y, test.true_risk[test_valid.index.to_numpy()])

    print(f"trained on {args.n_train:,} (seed {args.train_seed}, {train_valid.shape[0]:,} valid, "
          f"{int(resolve_labels(train_valid).severe.sum())} events) in {seconds:.1f} s; external "
          f"test on {len(y):,} (seed {args.test_seed}, {int(y.sum())} events)")
    print(f"oracle AUROC (true probabilities): {oracle:.3f}")
    for c in result.sample_size:
        print(f"  sample size {c.name:<17}{c.size.parameters:>4} parameters, minimum "
              f"{c.size.parameter_n:>6,}: {c.reason}")
    corrected = ({name: result.optimism.corrected(name) for name in
                  {c.name for c in result.candidates} | {"selected"}}
                 if result.optimism else {})
    print(f"{'candidate':<17}{'CV AUROC':>9}{'CV logloss':>11}{'int.test':>9}{'corr.':>7}"
          f"{'ext AUROC':>10}{'ext-oracle':>11}{'slope':>7}{'corr.':>7}{'intercept':>10}")
    external = {}
    for candidate in result.candidates:
        risk = candidate.model.risk(test_valid)
        auroc = roc_auc_score(y, risk)
        slope, intercept = calibration_slope_intercept(y, risk)
        external[candidate.name] = auroc
        marker = "  <- selected" if candidate is result.selected else ""
        internal = candidate.test_metrics.get("auroc", float("nan"))
        fixed = corrected.get(candidate.name, {})
        print(f"{candidate.name:<17}{candidate.cv_metrics['cv_auroc']:>9.3f}"
              f"{candidate.cv_metrics['cv_log_loss']:>11.4f}{internal:>9.3f}"
              f"{fixed.get('auroc', float('nan')):>7.3f}{auroc:>10.3f}{auroc - oracle:>+11.3f}"
              f"{slope:>7.2f}{fixed.get('calibration_slope', float('nan')):>7.2f}"
              f"{intercept:>+10.2f}{marker}")
    chosen = result.selected.name
    if result.optimism is not None:
        honest = corrected["selected"]
        print(f"selected {chosen} ({result.selected.params}, {result.selected.calibration}); "
              f"developed on every row, {result.optimism.repeats} bootstrap repeats of the whole "
              f"procedure in {result.optimism.seconds:.0f} s; procedure (selection included): "
              f"corrected AUROC {honest['auroc']:.3f} against external {external[chosen]:.3f}, "
              f"corrected slope {honest['calibration_slope']:.2f}")
    else:
        gap = result.selected.cv_metrics["cv_auroc"] - result.selected.test_metrics["auroc"]
        print(f"selected {chosen} ({result.selected.params}, {result.selected.calibration}); "
              f"CV-to-internal-test AUROC gap {gap:+.3f}")
    ie = result.internal_external
    for by, table in (ie.tables.items() if ie else ()):
        print(f"internal-external by {by} ({ie.seconds:.0f} s for every grouping): AUROC "
              f"{table['auroc'].min():.3f}-{table['auroc'].max():.3f} over {len(table)} held-out "
              f"groups, calibration slope {table['calibration_slope'].min():.2f}-"
              f"{table['calibration_slope'].max():.2f}")
    if result.selected.model.uncertainty is not None:
        print(f"per-patient intervals: MAPE {result.selected.model.uncertainty.mape:.4f} "
              f"({result.selected.model.uncertainty.method})")
    print(f"selected vs oracle {external[chosen] - oracle:+.3f}, vs m-EASIX "
          f"{external[chosen] - external['m_easix']:+.3f} (targets for 10,000 training patients: "
          ">= -0.02 and >= +0.05)")


if __name__ == "__main__":
    main()
