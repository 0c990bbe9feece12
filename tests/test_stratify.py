"""Enrolment strata, Poisson-binomial expected events, stratified block randomisation."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from crsrisk.errors import CrsriskError
from crsrisk.stratify import (
    SUMMARY_COLUMNS,
    StratificationError,
    assign_strata,
    expected_events_interval,
    poisson_binomial_pmf,
    randomize,
    stratify,
    stratum_summary,
)


def risks(n: int, seed: int = 0) -> pd.Series:
    """Skewed risks like a calibrated severe-CRS model's (most low, a tail of high)."""
    rng = np.random.default_rng(seed)
    return pd.Series(rng.beta(1.0, 10.0, n), name="risk")


def scored(n: int, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "risk": risks(n, seed)})


def brute_force_pmf(p: np.ndarray) -> np.ndarray:
    pmf = np.zeros(len(p) + 1)
    for outcome in itertools.product((0, 1), repeat=len(p)):
        x = np.array(outcome)
        pmf[x.sum()] += np.prod(np.where(x == 1, p, 1 - p))
    return pmf


def assert_blocks_balanced(arms: list[str], names: list[str], block_size: int) -> None:
    """Every complete block holds each arm equally often; the tail never overshoots."""
    per_arm = block_size // len(names)
    for start in range(0, len(arms), block_size):
        block = arms[start : start + block_size]
        counts = [block.count(a) for a in names]
        if len(block) == block_size:
            assert counts == [per_arm] * len(names), (start, block)
        else:
            assert max(counts) <= per_arm, block


# --- Poisson-binomial ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 64, 65, 300, 5000])
@pytest.mark.parametrize("p", [0.0, 0.03, 0.5, 0.97, 1.0])
def test_pmf_equals_binomial_when_probabilities_are_equal(n, p):
    pmf = poisson_binomial_pmf(np.full(n, p))
    expected = stats.binom.pmf(np.arange(n + 1), n, p)
    np.testing.assert_allclose(pmf, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_pmf_matches_brute_force_enumeration(seed):
    p = np.random.default_rng(seed).uniform(size=10)
    np.testing.assert_allclose(poisson_binomial_pmf(p), brute_force_pmf(p), rtol=0, atol=1e-14)


@pytest.mark.parametrize("n", [3, 200, 3000])
def test_pmf_sums_to_one_with_mean_and_variance_of_the_sum(n):
    p = np.random.default_rng(n).beta(0.5, 3.0, n)
    pmf = poisson_binomial_pmf(p)
    k = np.arange(n + 1)
    assert len(pmf) == n + 1
    assert (pmf >= 0).all()
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert (k * pmf).sum() == pytest.approx(p.sum(), rel=1e-10)
    variance = (k**2 * pmf).sum() - (k * pmf).sum() ** 2
    assert variance == pytest.approx((p * (1 - p)).sum(), rel=1e-8)


def test_pmf_of_100000_probabilities_is_fast_and_sound():
    p = np.random.default_rng(1).uniform(size=100_000)
    poisson_binomial_pmf(p[:1000])  # warm-up, so the bound times the algorithm only
    start = time.perf_counter()
    pmf = poisson_binomial_pmf(p)
    elapsed = time.perf_counter() - start
    k = np.arange(len(pmf))
    assert len(pmf) == 100_001
    assert (pmf >= 0).all()
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    assert (k * pmf).sum() == pytest.approx(p.sum(), rel=1e-10)
    # Typically under 0.1 s; the generous bound only catches a quadratic algorithm.
    assert elapsed < 3.0


def test_pmf_edge_cases():
    np.testing.assert_array_equal(poisson_binomial_pmf(np.array([])), [1.0])
    np.testing.assert_array_equal(poisson_binomial_pmf(np.zeros(3)), [1, 0, 0, 0])
    np.testing.assert_array_equal(poisson_binomial_pmf(np.ones(3)), [0, 0, 0, 1])


@pytest.mark.parametrize("bad", [[0.2, np.nan], [0.2, 1.5], [-0.1], [[0.1, 0.2]]])
def test_pmf_refuses_invalid_probabilities(bad):
    with pytest.raises(StratificationError, match="probabilities"):
        poisson_binomial_pmf(np.array(bad))


# --- expected-events interval -------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 10, 57, 400])
@pytest.mark.parametrize("p", [0.02, 0.1, 0.33, 0.5])
@pytest.mark.parametrize("level", [0.8, 0.95, 0.99])
def test_interval_equals_binomial_quantiles_when_probabilities_are_equal(n, p, level):
    expected, lower, upper = expected_events_interval(np.full(n, p), level)
    tail = (1 - level) / 2
    assert expected == pytest.approx(n * p)
    assert (lower, upper) == (
        int(stats.binom.ppf(tail, n, p)),
        int(stats.binom.ppf(1 - tail, n, p)),
    )
    assert isinstance(lower, int) and isinstance(upper, int)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.05, 0.95), min_size=5, max_size=300))
def test_interval_contains_the_mean(p):
    expected, lower, upper = expected_events_interval(np.array(p))
    assert expected == pytest.approx(sum(p))
    assert lower <= expected <= upper


def test_interval_contains_the_mean_for_a_realistic_cohort():
    expected, lower, upper = expected_events_interval(risks(500).to_numpy())
    assert lower < expected < upper


def test_interval_widens_with_level():
    p = risks(300).to_numpy()
    _, lo80, hi80 = expected_events_interval(p, 0.8)
    _, lo99, hi99 = expected_events_interval(p, 0.99)
    assert lo99 <= lo80 and hi80 <= hi99


def test_interval_can_exclude_the_mean_when_events_are_rare():
    # The documented limitation: one patient at 1% has no event with 99% probability.
    assert expected_events_interval(np.array([0.01])) == (0.01, 0, 0)
    assert expected_events_interval(np.array([])) == (0.0, 0, 0)


@pytest.mark.parametrize("level", [0, 1, 95, -0.5, True, float("nan")])
def test_interval_refuses_a_level_outside_0_1(level):
    with pytest.raises(StratificationError, match="level must be a probability"):
        expected_events_interval(np.array([0.1, 0.2]), level)


# --- strata -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(100, 4), (10, 3), (1001, 5), (7, 7), (50, 2)])
def test_quantile_strata_have_balanced_sizes(n, k):
    strata = assign_strata(risks(n, seed=n), n_strata=k)
    sizes = strata.value_counts(sort=False)
    assert len(sizes) == k
    assert sizes.max() - sizes.min() <= 1
    assert sizes.sum() == n


def test_quantile_strata_rise_in_risk():
    frame = scored(600)
    strata = assign_strata(frame["risk"], n_strata=4)
    summary = stratum_summary(frame, strata)
    assert summary["mean_risk"].is_monotonic_increasing
    assert (summary["risk_max"].to_numpy()[:-1] < summary["risk_min"].to_numpy()[1:]).all()
    assert summary["expected_events"].is_monotonic_increasing


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from([0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.9, 1.0]), min_size=1, max_size=80
    ),
    st.integers(2, 9),
)
def test_quantile_strata_keep_ties_together_and_are_never_empty(values, k):
    risk = pd.Series(values)
    if k > risk.nunique():
        with pytest.raises(StratificationError, match="distinct risks"):
            assign_strata(risk, n_strata=k)
        return
    strata = assign_strata(risk, n_strata=k)
    assert strata.notna().all()
    assert (strata.value_counts() > 0).all() and len(strata.cat.categories) == k
    assert (risk.groupby(risk).apply(lambda g: strata[g.index].nunique()) == 1).all()
    # Strata are ordered: every risk in a stratum is below every risk in the next one.
    codes = strata.cat.codes
    by_code = risk.groupby(codes)
    assert (by_code.max().to_numpy()[:-1] < by_code.min().to_numpy()[1:]).all()


def test_quantile_strata_balance_around_a_large_tie():
    risk = pd.Series([0.01] * 50 + [0.05] + [0.2] * 49)
    assert assign_strata(risk, n_strata=2).value_counts(sort=False).tolist() == [50, 50]


def test_quantile_cut_points_reproduce_the_strata_as_thresholds():
    risk = risks(333, seed=5)
    strata = assign_strata(risk, n_strata=3)
    cuts = strata.attrs["thresholds"]
    assert len(cuts) == 2
    again = assign_strata(risk, thresholds=cuts)
    pd.testing.assert_series_equal(again, strata)
    # Labels show the cut points exactly.
    for label, cut in zip(strata.cat.categories[1:], cuts, strict=True):
        assert float(label.split("[")[1].split(",")[0]) == cut


def test_threshold_equal_to_a_risk_puts_it_in_the_upper_stratum():
    risk = pd.Series([0.0, 0.0299999, 0.03, 0.05, 0.12, 0.5, 1.0])
    strata = assign_strata(risk, thresholds=[0.03, 0.12])
    assert strata.cat.categories.tolist() == [
        "S1 [0.000, 0.030)",
        "S2 [0.030, 0.120)",
        "S3 [0.120, 1.000]",
    ]
    assert strata.cat.codes.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert strata.cat.ordered
    assert strata.name == "stratum"


def test_every_patient_is_in_exactly_one_stratum_and_the_index_is_kept():
    risk = risks(40).set_axis([f"id{i}" for i in range(40)][::-1])
    for strata in (
        assign_strata(risk, n_strata=3),
        assign_strata(risk, thresholds=[0.05, 0.1, 0.2]),
    ):
        assert strata.index.equals(risk.index)
        assert strata.notna().all()
        dummies = pd.get_dummies(strata)
        assert (dummies.sum(axis=1) == 1).all()


def test_threshold_strata_keep_empty_strata_as_categories():
    strata = assign_strata(pd.Series([0.01, 0.02]), thresholds=[0.1, 0.5])
    assert len(strata.cat.categories) == 3
    assert strata.value_counts(sort=False).tolist() == [2, 0, 0]


def test_labels_gain_decimals_for_fine_thresholds():
    strata = assign_strata(pd.Series([0.5]), thresholds=[0.0125, 0.0126])
    assert strata.cat.categories.tolist() == [
        "S1 [0.0000, 0.0125)",
        "S2 [0.0125, 0.0126)",
        "S3 [0.0126, 1.0000]",
    ]


def test_nullable_float_risks_are_accepted():
    strata = assign_strata(pd.Series([0.01, 0.2], dtype="Float64"), thresholds=[0.1])
    assert strata.cat.codes.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of n_strata .* got neither"),
        ({"n_strata": 2, "thresholds": [0.1]}, "exactly one of n_strata .* got both"),
        ({"n_strata": 1}, "at least 2"),
        ({"n_strata": 2.5}, "integer of at least 2"),
        ({"n_strata": True}, "integer of at least 2"),
        ({"n_strata": 6}, "6 quantile strata need at least 6 distinct risks, but there are 5"),
        ({"thresholds": [0.12, 0.03]}, "strictly increasing"),
        ({"thresholds": [0.03, 0.03]}, "strictly increasing"),
        ({"thresholds": [0.0, 0.5]}, "strictly between 0 and 1"),
        ({"thresholds": [0.5, 1.0]}, "strictly between 0 and 1"),
        ({"thresholds": [3, 12]}, r"0\.03, not 3"),
        ({"thresholds": [float("nan")]}, "strictly between 0 and 1"),
        ({"thresholds": []}, "at least one threshold"),
        ({"thresholds": "0.1,0.2"}, "sequence of numbers"),
        ({"thresholds": ["a"]}, "must be numbers"),
    ],
)
def test_invalid_strata_arguments_are_refused_with_the_fix(kwargs, message):
    risk = pd.Series([0.01, 0.02, 0.02, 0.1, 0.3, 0.6])
    with pytest.raises(StratificationError, match=message):
        assign_strata(risk, **kwargs)


@pytest.mark.parametrize(
    ("risk", "message"),
    [
        (pd.Series([0.1, np.nan, 0.3], index=["a", "b", "c"]), r"missing for 1 .*'b'"),
        (pd.Series([0.1, 1.2]), r"outside \[0, 1\] for 1"),
        (pd.Series([10.0, 55.0]), "not scores or percentages"),
        (pd.Series(["0.1", "0.2"]), "not numbers"),
        (pd.Series([True, False]), "not numbers"),
        ([0.1, 0.2], "must be a pandas Series"),
    ],
)
def test_invalid_risks_are_refused(risk, message):
    with pytest.raises(StratificationError, match=message):
        assign_strata(risk, thresholds=[0.5])


def test_stratification_error_is_a_user_facing_value_error():
    assert issubclass(StratificationError, ValueError)
    assert issubclass(StratificationError, CrsriskError)


# --- summary ------------------------------------------------------------------------------------


def test_summary_has_one_row_per_stratum_including_empty_ones():
    frame = pd.DataFrame({"risk": [0.01, 0.02, 0.5, 0.9]}, index=[10, 11, 12, 13])
    strata = assign_strata(frame["risk"], thresholds=[0.1, 0.2])
    summary = stratum_summary(frame, strata)
    assert summary.columns.tolist() == list(SUMMARY_COLUMNS)
    assert summary["stratum"].tolist() == strata.cat.categories.tolist()
    assert summary["stratum"].dtype == strata.dtype
    assert summary["n"].tolist() == [2, 0, 2]
    assert summary["expected_events"].tolist() == pytest.approx([0.03, 0.0, 1.4])
    assert summary.loc[0, ["risk_min", "risk_max"]].tolist() == [0.01, 0.02]
    assert summary.loc[0, "mean_risk"] == pytest.approx(0.015)
    empty = summary.loc[1]
    assert np.isnan(empty["risk_min"]) and np.isnan(empty["mean_risk"])
    assert (empty["expected_events"], empty["events_lower"], empty["events_upper"]) == (0, 0, 0)
    # P(0 events) = 0.5 * 0.1 = 0.05 >= 0.025, so the lower bound is 0.
    assert summary.loc[2, ["events_lower", "events_upper"]].tolist() == [0, 2]
    assert summary["n"].dtype == "int64" and summary["events_upper"].dtype == "int64"


def test_summary_interval_matches_expected_events_interval():
    frame = scored(400)
    strata = assign_strata(frame["risk"], n_strata=3)
    summary = stratum_summary(frame, strata, level=0.9)
    for row in summary.itertuples():
        p = frame.loc[strata == row.stratum, "risk"].to_numpy()
        assert (row.expected_events, row.events_lower, row.events_upper) == pytest.approx(
            expected_events_interval(p, 0.9)
        )


def test_summary_refuses_misaligned_strata_and_missing_risk():
    frame = scored(10)
    strata = assign_strata(frame["risk"], n_strata=2)
    with pytest.raises(StratificationError, match="not aligned"):
        stratum_summary(frame, strata.reset_index(drop=True).set_axis(range(1, 11)))
    with pytest.raises(StratificationError, match="no 'risk' column"):
        stratum_summary(frame.drop(columns="risk"), strata)
    with pytest.raises(StratificationError, match="have no stratum"):
        stratum_summary(frame, strata.cat.set_categories(strata.cat.categories[:1]))


# --- randomisation ------------------------------------------------------------------------------


def interleaved_strata(sizes: list[int], seed: int = 0) -> pd.Series:
    labels = np.repeat([f"S{i + 1}" for i in range(len(sizes))], sizes)
    labels = np.random.default_rng(seed).permutation(labels)
    return pd.Series(pd.Categorical(labels), name="stratum")


def test_randomisation_is_reproducible_by_seed():
    strata = interleaved_strata([60, 50, 40])
    first = randomize(strata, ["A", "B"], block_size=4, seed=7)
    pd.testing.assert_series_equal(first, randomize(strata, ["A", "B"], block_size=4, seed=7))
    assert not first.equals(randomize(strata, ["A", "B"], block_size=4, seed=8))


def test_randomisation_is_stable_across_processes():
    # Pinned: a salted hash() in the per-stratum seed would change this between runs.
    arms = randomize(pd.Series(["S1"] * 8), ["A", "B"], block_size=4, seed=42)
    assert arms.tolist() == GOLDEN_ARMS


GOLDEN_ARMS = ["B", "A", "A", "B", "B", "A", "B", "A"]


def test_randomisation_output_is_categorical_on_the_arms_and_aligned():
    strata = interleaved_strata([5, 6]).set_axis(list("abcdefghijk"))
    arms = randomize(strata, ["control", "tocilizumab"], block_size=2, seed=0)
    assert arms.name == "arm"
    assert arms.index.equals(strata.index)
    assert arms.cat.categories.tolist() == ["control", "tocilizumab"]
    assert arms.notna().all()


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    n_arms=st.integers(2, 4),
    multiple=st.integers(1, 4),
    seed=st.integers(0, 2**32),
    order_seed=st.integers(0, 1000),
)
def test_every_complete_block_is_balanced_within_each_stratum(
    sizes, n_arms, multiple, seed, order_seed
):
    names = [f"arm{i}" for i in range(n_arms)]
    block_size = n_arms * multiple
    strata = interleaved_strata(sizes, order_seed)
    arms = randomize(strata, names, block_size=block_size, seed=seed)
    for label in strata.cat.categories:
        in_order = arms[strata == label].astype(str).tolist()
        assert_blocks_balanced(in_order, names, block_size)
        counts = [in_order.count(a) for a in names]
        assert max(counts) - min(counts) <= block_size // n_arms <= block_size


def test_appending_a_patient_keeps_earlier_assignments_in_every_stratum():
    strata = interleaved_strata([23, 17, 9])
    before = randomize(strata, ["A", "B", "C"], block_size=6, seed=3)
    grown = pd.concat(
        [strata, pd.Series(pd.Categorical(["S2"], categories=strata.cat.categories))],
        ignore_index=True,
    )
    after = randomize(grown, ["A", "B", "C"], block_size=6, seed=3)
    pd.testing.assert_series_equal(after.iloc[:-1], before)


def test_a_strata_sequence_does_not_depend_on_the_other_strata():
    strata = interleaved_strata([30, 30])
    together = randomize(strata, ["A", "B"], block_size=4, seed=11)
    only_s2 = strata[strata == "S2"].cat.remove_unused_categories()
    alone = randomize(only_s2, ["A", "B"], block_size=4, seed=11)
    assert together[strata == "S2"].tolist() == alone.tolist()


@pytest.mark.parametrize(
    ("arms", "block_size", "seed", "message"),
    [
        (["A", "B"], 3, 0, "positive multiple of the number of arms \\(2\\), got 3"),
        (["A", "B", "C"], 4, 0, "positive multiple of the number of arms \\(3\\)"),
        (["A", "B"], 0, 0, "positive multiple"),
        (["A", "B"], -2, 0, "positive multiple"),
        (["A", "B"], 4.0, 0, "positive multiple"),
        (["A"], 2, 0, "at least two arms"),
        (["A", "A"], 2, 0, "distinct"),
        (["A", ""], 2, 0, "non-empty strings"),
        ("AB", 2, 0, "sequence of arm names"),
        (["A", "B"], 2, -1, "non-negative integer"),
    ],
)
def test_invalid_randomisation_arguments_are_refused(arms, block_size, seed, message):
    with pytest.raises(StratificationError, match=message):
        randomize(interleaved_strata([4]), arms, block_size=block_size, seed=seed)


def test_randomisation_refuses_patients_without_a_stratum():
    strata = pd.Series(pd.Categorical(["S1", None, "S1"]), index=["a", "b", "c"])
    with pytest.raises(StratificationError, match=r"1 patient\(s\) have no stratum .*'b'"):
        randomize(strata, ["A", "B"], block_size=2, seed=0)


# --- stratify() ---------------------------------------------------------------------------------


def test_stratify_summary_counts_every_patient():
    frame = scored(250)
    original = frame.copy(deep=True)
    patients, summary = stratify(frame, n_strata=4, arms=["A", "B"], block_size=4, seed=1)
    pd.testing.assert_frame_equal(frame, original)  # the input is never modified
    assert summary["n"].sum() == len(frame)
    assert patients.columns.tolist() == ["patient_id", "risk", "stratum", "arm"]
    assert patients["stratum"].value_counts(sort=False).tolist() == summary["n"].tolist()
    pd.testing.assert_frame_equal(patients[["patient_id", "risk"]], frame)


def test_stratify_without_arms_adds_only_strata():
    patients, summary = stratify(scored(30), thresholds=[0.05, 0.2])
    assert "arm" not in patients.columns
    assert len(summary) == 3
    assert summary["n"].sum() == 30


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (scored(5), {"n_strata": 2, "arms": ["A", "B"]}, "both arms and block_size, got only arms"),
        (scored(5), {"n_strata": 2, "block_size": 2}, "got only block_size"),
        (scored(5).drop(columns="risk"), {"n_strata": 2}, "no 'risk' column"),
        (scored(5).assign(arm="A"), {"n_strata": 2}, r"already has column\(s\) \['arm'\]"),
    ],
)
def test_stratify_refuses_unusable_requests(frame, kwargs, message):
    with pytest.raises(StratificationError, match=message):
        stratify(frame, **kwargs)
