"""Time to explain N patients, against a bare `shap.TreeExplainer` on the same booster and rows.

    python bench/explain.py --n 20000

crsrisk's explain path (`RiskModel.contributions`: the model matrix from validated rows,
xgboost's TreeSHAP ``pred_contribs``, and contributions summed per driver group) is timed
against ``shap.TreeExplainer(booster).shap_values(...)`` given the ready-made model matrix. Both
build their xgboost DMatrix inside the timing. The two must agree: the largest difference of
the per-driver sums is printed.
"""

from __future__ import annotations

import argparse

import numpy as np
import xgboost as xgb

from _common import best_of
from crsrisk.contract.grading import resolve_labels
from crsrisk.contract.validate import validate
from crsrisk.explain.drivers import _grouped, explain_global
from crsrisk.modeling.adapters import fitted_adapter
from crsrisk.modeling.calibration import Calibrator
from crsrisk.modeling.riskmodel import RiskModel, Tiers
from crsrisk.modeling.train import make_estimator, xgboost_trials
from crsrisk.simulate.cohort import simulate_cohort


def fitted_model(n_train: int, seed: int) -> RiskModel:
    """XGBoost with training's default configuration, fitted on a simulated cohort."""
    valid = validate(simulate_cohort(n_train, seed=seed).baseline).valid
    y = resolve_labels(valid).severe.to_numpy()
    pipeline = make_estimator("xgboost", xgboost_trials(1, seed)[0], seed).fit(valid, y)
    adapter = fitted_adapter("xgboost", pipeline)
    calibrator = Calibrator("sigmoid").fit(adapter.margin(adapter.design(valid)), y)
    return RiskModel(adapter=adapter, calibrator=calibrator, tiers=Tiers(0.05, 0.2), planning={})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="patients to explain")
    parser.add_argument("--train-n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import shap

    model = fitted_model(args.train_n, seed=1)
    booster = model.adapter.booster
    valid = validate(simulate_cohort(args.n, seed=2).baseline).valid
    design = model.design(valid)
    print(f"model: XGBoost, {booster.num_boosted_rounds()} trees, {design.shape[1]} features; "
          f"explaining {len(valid):,} patients, best of {args.repeats}")

    ours_s, contrib = best_of(args.repeats, lambda: model.contributions(valid))
    features_s, _ = best_of(args.repeats, lambda: model.design(valid))

    def bare():
        explainer = shap.TreeExplainer(booster)
        return explainer.shap_values(xgb.DMatrix(design, enable_categorical=True))

    shap_s, values = best_of(args.repeats, bare)
    build_s, _ = best_of(args.repeats, lambda: shap.TreeExplainer(booster))
    global_s, _ = best_of(args.repeats, lambda: explain_global(model, valid, max_rows=None))

    reference = _grouped(np.asarray(values, dtype=float), list(design.columns), valid.index)
    agreement = float(np.abs(reference.to_numpy() - contrib.values.to_numpy()).max())
    additivity = float(np.abs(contrib.values.to_numpy().sum(axis=1) + contrib.base
                              - model.margin(valid)).max())
    print(f"crsrisk contributions (features + TreeSHAP + driver groups): {ours_s:8.3f} s "
          f"({len(valid) / ours_s:,.0f} patients/s; features alone {features_s:.3f} s)")
    print(f"bare shap.TreeExplainer(booster).shap_values:               {shap_s:8.3f} s "
          f"({len(valid) / shap_s:,.0f} patients/s; building the explainer alone "
          f"{build_s:.3f} s)")
    print(f"ratio crsrisk / bare shap: {ours_s / shap_s:.2f}")
    print(f"report path explain_global (shap TreeExplainer + groups + display data): "
          f"{global_s:.3f} s")
    print(f"max |difference| per driver group: {agreement:.2e}; max |values + base - margin|: "
          f"{additivity:.2e}")


if __name__ == "__main__":
    main()
