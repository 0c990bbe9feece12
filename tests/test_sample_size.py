"""Riley et al. minimum sample size: golden values from pmsampsize's own examples and tests."""

from __future__ import annotations

import pytest

from crsrisk.modeling.sample_size import (
    cox_snell_r2_from_c,
    max_cox_snell_r2,
    minimum_sample_size,
)


def test_worked_example_from_an_anticipated_cox_snell_r2():
    # pmsampsize(type="b", csrsquared=0.288, parameters=24, prevalence=0.174):
    # criterion 1: 623, criterion 2: 662, criterion 3: 221, final 662 (Riley et al. 2020, BMJ).
    size = minimum_sample_size(24, 0.174, cox_snell_r2=0.288)
    assert (size.n_shrinkage, size.n_optimism, size.n_risk, size.minimum_n) == (
        623, 662, 221, 662)


def test_worked_example_from_a_c_statistic():
    # pmsampsize(type="b", cstatistic=0.89, parameters=24, prevalence=0.174): 615, 660, 221.
    size = minimum_sample_size(24, 0.174, c_statistic=0.89)
    assert (size.n_shrinkage, size.n_optimism, size.n_risk, size.minimum_n) == (
        615, 660, 221, 660)


def test_c_080_at_15_percent_with_10_and_5_parameters():
    # pmsampsize's simulated conversion gives 547 for 10 parameters (82 events); the exact
    # large-sample conversion used here lands within 0.5% of it.
    ten = minimum_sample_size(10, 0.15, c_statistic=0.80)
    assert ten.minimum_n == pytest.approx(547, rel=0.005)
    assert ten.minimum_events == pytest.approx(82, abs=1)
    five = minimum_sample_size(5, 0.15, c_statistic=0.80)
    assert five.minimum_n < ten.minimum_n
    assert five.n_shrinkage == pytest.approx(ten.n_shrinkage / 2, abs=1)  # linear in p


def test_cox_snell_r2_grows_with_c_and_stays_below_its_maximum():
    values = [cox_snell_r2_from_c(c, 0.2) for c in (0.6, 0.7, 0.8, 0.9)]
    assert values == sorted(values)
    assert values[0] > 0 and values[-1] < max_cox_snell_r2(0.2)


def test_supported_compares_the_cohort_with_the_parameter_criteria():
    size = minimum_sample_size(3, 0.22, c_statistic=0.75, available_n=202)
    assert size.parameter_n <= 202 < size.n_risk  # criterion 3 alone does not refuse
    assert size.supported
    assert not minimum_sample_size(9, 0.22, c_statistic=0.75, available_n=202).supported
    assert not minimum_sample_size(1, 0.2, c_statistic=0.75).supported  # no cohort given


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(parameters=0, prevalence=0.2, c_statistic=0.8), "at least one parameter"),
        (dict(parameters=3, prevalence=0.2, c_statistic=0.5), r"C statistic must lie"),
        (dict(parameters=3, prevalence=1.0, c_statistic=0.8), "prevalence must lie"),
        (dict(parameters=3, prevalence=0.2), "exactly one"),
        (dict(parameters=3, prevalence=0.05, cox_snell_r2=0.4), "Cox-Snell R"),
    ],
)
def test_bad_inputs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        minimum_sample_size(**kwargs)


def test_logistic_is_searched_without_splines_when_only_that_design_is_supported():
    """A cohort that supports the linear design (75 parameters) but not its spline version
    (95) fits the logistic candidate without splines, and says so, instead of skipping it."""
    from crsrisk.config import load_train_config
    from crsrisk.contract.grading import resolve_labels
    from crsrisk.contract.validate import validate
    from crsrisk.modeling.candidates import check_candidates, searched_config
    from crsrisk.modeling.train import search_space
    from crsrisk.simulate.cohort import simulate_cohort

    valid = validate(simulate_cohort(4000, seed=1).baseline).valid
    y = resolve_labels(valid).severe.astype(int).to_numpy()
    config = load_train_config()
    config = config.model_copy(update={
        "candidates": ["logistic"],
        "sample_size": config.sample_size.model_copy(update={"anticipated_auroc": 0.9})})
    (size,) = check_candidates(valid, y, config)
    assert size.fitted and size.splines == (False,)
    assert size.size.supported and size.size.parameters < 95
    assert "supported without splines" in size.reason and "95 with splines" in size.reason
    searched = searched_config(config, [size])
    assert {p["splines"] for p in search_space("logistic", searched)} == {False}
    assert {p["splines"] for p in search_space("logistic", config)} == {False, True}

    forced = config.model_copy(update={"sample_size": config.sample_size.model_copy(
        update={"force": ["logistic"]})})
    (size,) = check_candidates(valid, y, forced)
    assert size.fitted and size.splines is None and "forced" in size.reason
