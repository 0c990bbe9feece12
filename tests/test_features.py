"""FeatureBuilder: derived features, fitted on training rows only, in tree and linear shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sklearn
import xgboost as xgb
from sklearn.base import clone
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

from crsrisk.contract.products import PRODUCTS
from crsrisk.contract.spec import BASELINE_NAMES
from crsrisk.contract.validate import validate
from crsrisk.features.builder import (
    BINARY_FEATURES,
    CATEGORICAL_FEATURES,
    CONTINUOUS_FEATURES,
    FeatureBuilder,
    feature_group,
    feature_label,
    raw_value_column,
)
from tests.conftest import baseline_frame

TREE_NAMES = [*CONTINUOUS_FEATURES, *BINARY_FEATURES, *CATEGORICAL_FEATURES]


# ----------------------------------------------------------------------------------------------
# A synthetic validated cohort (independent of crsrisk.simulate.cohort)
# ----------------------------------------------------------------------------------------------


def _lognormal(rng, median, sigma, n, missing=0.0):
    values = median * np.exp(rng.normal(0, sigma, n))
    values[rng.random(n) < missing] = np.nan
    return values


def synthetic_cohort(
    n: int = 600, seed: int = 0, exclude_products: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, np.ndarray]:
    """A validated baseline table and a binary outcome that rises with m-EASIX and burden."""
    rng = np.random.default_rng(seed)
    names = [p for p in PRODUCTS if p not in exclude_products]
    product = rng.choice(names, n)
    therapy = np.array([PRODUCTS[p].therapy_class for p in product])
    diagnosis = np.array([rng.choice(PRODUCTS[p].usual_diagnoses or ("other",)) for p in product])
    car_t = therapy == "CAR-T"
    costim = np.where(product == "other_car_t", rng.choice(["CD28", "4-1BB"], n), None)
    dose = np.where(car_t, _lognormal(rng, 2.0, 0.4, n), np.nan)
    lymphodepletion = np.where(
        car_t, rng.choice(["flu_cy", "bendamustine"], n, p=[0.8, 0.2]), "none"
    ).astype(object)
    lymphodepletion[rng.random(n) < 0.05] = None
    ldh = _lognormal(rng, 250, 0.5, n, missing=0.05)
    crp = _lognormal(rng, 15, 1.0, n, missing=0.2)
    platelets = _lognormal(rng, 150, 0.5, n, missing=0.02)
    lymphoma = np.isin(diagnosis, ["LBCL", "FL", "MCL"])
    spd = np.where(lymphoma, _lognormal(rng, 30, 1.0, n, missing=0.2), np.nan)
    blasts = np.where(diagnosis == "B-ALL", np.clip(_lognormal(rng, 10, 1.2, n), 0, 100), np.nan)
    plasma = np.where(diagnosis == "MM", np.clip(_lognormal(rng, 20, 0.7, n), 0, 100), np.nan)

    def flag(p, missing):
        values = np.where(rng.random(n) < p, "yes", "no").astype(object)
        values[rng.random(n) < missing] = None
        return values

    table = pd.DataFrame(
        {
            "patient_id": [f"S{i}" for i in range(n)],
            "site": rng.choice(["A", "B", "C"], n),
            "infusion_date": "2022-05-01",
            "age_years": np.round(rng.uniform(20, 80, n), 1),
            "sex": rng.choice(["F", "M"], n),
            "weight_kg": np.round(rng.uniform(50, 100, n), 1),
            "ecog": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 3, n)),
            "diagnosis": diagnosis,
            "therapy_class": therapy,
            "product": product,
            "costim_domain": costim,
            "cell_dose_1e6_per_kg": dose,
            "lymphodepletion": lymphodepletion,
            "prior_lines": rng.integers(1, 6, n).astype(float),
            "bridging_therapy": flag(0.4, 0.1),
            "ldh_u_l": ldh,
            "spd_cm2": spd,
            "marrow_blasts_pct": blasts,
            "marrow_plasma_cells_pct": plasma,
            "bulky_disease": flag(0.2, 0.3),
            "crp_mg_l": crp,
            "ferritin_ng_ml": _lognormal(rng, 600, 0.8, n, missing=0.3),
            "platelets_1e9_l": platelets,
            "anc_1e9_l": _lognormal(rng, 2.5, 0.5, n, missing=0.03),
            "hemoglobin_g_dl": np.clip(rng.normal(10.5, 1.5, n), 5, 16),
            "creatinine_mg_dl": _lognormal(rng, 0.9, 0.3, n, missing=0.03),
            "il6_pg_ml": _lognormal(rng, 8, 1.0, n, missing=0.7),
            "prior_autoimmune_disease": flag(0.07, 0.1),
            "hlh_history": flag(0.02, 0.3),
        }
    )
    valid = validate(table).valid
    assert len(valid) == n, "the synthetic cohort must be entirely valid"
    m = np.log2(np.nan_to_num(ldh * crp / 10 / platelets, nan=3.0))
    logit = -3.0 + 0.9 * (m - 1.5) + 1.5 * (diagnosis == "B-ALL") * np.log1p(blasts / 10)
    y = (rng.random(n) < 1 / (1 + np.exp(-np.nan_to_num(logit, nan=-3.0)))).astype(int)
    return valid, y


@pytest.fixture(scope="module")
def cohort() -> tuple[pd.DataFrame, np.ndarray]:
    return synthetic_cohort()


@pytest.fixture(scope="module")
def tiny() -> pd.DataFrame:
    return validate(baseline_frame()).valid


def _no_pd_na(frame: pd.DataFrame) -> bool:
    return not frame.astype(object).map(lambda v: v is pd.NA).to_numpy().any()


# ----------------------------------------------------------------------------------------------
# Values of the common features
# ----------------------------------------------------------------------------------------------


def test_tree_values_on_hand_checked_rows(tiny):
    out = FeatureBuilder("tree").fit(tiny).transform(tiny)
    p1, p2, p3 = (out.iloc[i] for i in range(3))
    assert p1["log_crp"] == pytest.approx(np.log2(25 + 1))
    assert p1["log_ldh"] == pytest.approx(np.log2(310))
    assert p1["log_creatinine"] == pytest.approx(np.log2(0.9))
    # m-EASIX with CRP converted to mg/dL: 310 x 2.5 / 150.
    assert p1["log2_m_easix"] == pytest.approx(np.log2(310 * 2.5 / 150))
    assert p1["log2_easix"] == pytest.approx(np.log2(310 * 0.9 / 150))
    assert np.isnan(p3["log2_m_easix"])  # no LDH
    assert (p1["flu_cy"], p2["flu_cy"], p3["flu_cy"]) == (1.0, 0.0, 1.0)
    assert p1["bridging_therapy"] == 1.0 and np.isnan(p2["bridging_therapy"])
    assert p3["hlh_history"] == 1.0 and p1["hlh_history"] == 0.0
    assert p1["ecog"] == 1.0 and np.isnan(p3["ecog"])
    assert np.isnan(p2["log_cell_dose"]) and p3["log_cell_dose"] == pytest.approx(np.log2(1.01))
    assert p1["log_platelets"] == pytest.approx(np.log2(151))
    # Costimulation: filled from the product table, "none" for a bispecific, given for other.
    assert list(out["costim"].astype(object)) == ["CD28", "none", "4-1BB"]
    assert list(out["product"].astype(object)) == ["axi-cel", "teclistamab", "other_car_t"]


def test_tumour_burden_standardised_within_diagnosis_on_training_rows(cohort):
    valid, _ = cohort
    train, test = valid.iloc[:400], valid.iloc[400:]
    fb = FeatureBuilder("tree").fit(train)
    burden = fb.transform(train)["tumour_burden"]
    for diagnosis in ("LBCL", "B-ALL", "MM"):
        within = burden[train["diagnosis"].eq(diagnosis).to_numpy()].dropna()
        assert len(within) >= 10
        assert within.mean() == pytest.approx(0.0, abs=1e-9)
        assert within.std(ddof=0) == pytest.approx(1.0)
    # Each diagnosis uses its own marker: B-ALL rows follow marrow blasts, MM plasma cells.
    ball = train[train["diagnosis"].eq("B-ALL")]
    order = np.argsort(ball["marrow_blasts_pct"].to_numpy())
    assert np.all(np.diff(fb.transform(ball)["tumour_burden"].to_numpy()[order]) >= 0)
    # Test rows are scaled with the training statistics, row by row.
    whole = fb.transform(test)["tumour_burden"]
    for k in (0, 5, 17):
        one = fb.transform(test.iloc[[k]])["tumour_burden"].iloc[0]
        assert one == pytest.approx(whole.iloc[k], nan_ok=True)
    # A diagnosis without a burden marker has no burden.
    other = train["diagnosis"].eq("other").to_numpy()
    assert other.any() and burden[other].isna().all()


# ----------------------------------------------------------------------------------------------
# Output shapes and dtypes
# ----------------------------------------------------------------------------------------------


def test_tree_output_is_float_or_category_without_pd_na(cohort):
    valid, _ = cohort
    out = FeatureBuilder("tree").fit(valid).transform(valid)
    assert list(out.columns) == TREE_NAMES
    for name, dtype in out.dtypes.items():
        if name in CATEGORICAL_FEATURES:
            assert isinstance(dtype, pd.CategoricalDtype), name
        else:
            assert dtype == np.float64, name
    assert out.isna().any().any()  # missing stays missing for xgboost
    assert _no_pd_na(out)
    assert out.index.equals(valid.index)


@pytest.mark.parametrize("splines", [False, True])
def test_linear_output_is_finite_float(cohort, splines):
    valid, _ = cohort
    fb = FeatureBuilder("linear", splines=splines).fit(valid.iloc[:300])
    out = fb.transform(valid.iloc[300:])
    assert (out.dtypes == np.float64).all()
    assert np.isfinite(out.to_numpy()).all()
    assert list(out.columns) == list(fb.get_feature_names_out())
    spline_terms = [c for c in out.columns if "_spline_" in c]
    assert bool(spline_terms) == splines
    if splines:
        assert "log_crp" not in out.columns  # replaced by its spline terms
    # Standardised continuous features on the training rows; binary columns stay 0/1.
    train_out = fb.transform(valid.iloc[:300])
    assert train_out["log_ferritin"].mean() == pytest.approx(0.0, abs=1e-9)
    assert train_out["log_ferritin"].std(ddof=0) == pytest.approx(1.0)
    assert set(np.unique(train_out["log_crp_missing"])) == {0.0, 1.0}
    assert set(np.unique(train_out["product=axi-cel"])) == {0.0, 1.0}


def test_linear_median_imputation_comes_from_training_rows(cohort):
    valid, _ = cohort
    train = valid.iloc[:301]
    observed = train["crp_mg_l"].dropna()
    if len(observed) % 2 == 0:  # an odd count keeps the median an observed value
        train = train.drop(index=observed.index[0])
        observed = observed.iloc[1:]
    fb = FeatureBuilder("linear").fit(train)
    # Different data: one row at the training median, one missing, the rest very high.
    new = valid.iloc[310:320].copy()
    new["crp_mg_l"] = 500.0
    new.loc[new.index[0], "crp_mg_l"] = float(observed.median())
    new.loc[new.index[1], "crp_mg_l"] = np.nan
    out = fb.transform(new)
    assert out["log_crp"].iloc[1] == pytest.approx(out["log_crp"].iloc[0])
    assert out["log_crp"].iloc[1] != pytest.approx(out["log_crp"].iloc[5])
    assert (out["log_crp_missing"].to_numpy() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).all()


def test_linear_indicators_only_for_features_missing_at_fit(tiny, cohort):
    valid, _ = cohort
    complete = valid[valid["crp_mg_l"].notna()]
    names = FeatureBuilder("linear").fit(complete).get_feature_names_out()
    assert "log_crp" in names and "log_crp_missing" not in names
    # A missing CRP in later data is still imputed, never NaN.
    later = valid[valid["crp_mg_l"].isna()]
    out = FeatureBuilder("linear").fit(complete).transform(later)
    assert np.isfinite(out["log_crp"]).all()
    # A feature missing in every training row is left out of the linear matrix.
    names_tiny = FeatureBuilder("linear").fit(tiny.iloc[:2]).get_feature_names_out()
    assert "marrow_blasts_pct" not in names_tiny


def test_transform_is_row_by_row(cohort):
    valid, _ = cohort
    for fb in (FeatureBuilder("tree"), FeatureBuilder("linear", splines=True)):
        fb.fit(valid.iloc[:400])
        whole = fb.transform(valid.iloc[400:])
        for k in (0, 3, 150):
            one = fb.transform(valid.iloc[[400 + k]])
            pd.testing.assert_frame_equal(one, whole.iloc[[k]])


def test_extra_input_columns_are_ignored(cohort):
    valid, _ = cohort
    extra = valid.assign(
        crs_max_grade=pd.array([4] * len(valid), dtype="Int64"),
        note=pd.Series(["free text"] * len(valid), index=valid.index, dtype="str"),
        lab_x=np.arange(len(valid), dtype=float),
    )
    for kind in ("tree", "linear"):
        plain = FeatureBuilder(kind).fit(valid)
        with_extra = FeatureBuilder(kind).fit(extra)
        pd.testing.assert_frame_equal(with_extra.transform(extra), plain.transform(valid))
        assert not {"crs_max_grade", "note", "lab_x"} & set(with_extra.get_feature_names_out())


def test_feature_names_are_deterministic(cohort):
    valid, _ = cohort
    other, _ = synthetic_cohort(n=200, seed=7)
    assert list(FeatureBuilder("tree").fit(other).get_feature_names_out()) == TREE_NAMES
    assert list(FeatureBuilder("tree").fit(valid).get_feature_names_out()) == TREE_NAMES
    shuffled = valid.sample(frac=1.0, random_state=3)
    for splines in (False, True):
        a = FeatureBuilder("linear", splines=splines).fit(valid).get_feature_names_out()
        b = FeatureBuilder("linear", splines=splines).fit(shuffled).get_feature_names_out()
        assert list(a) == list(b)
        assert len(set(a)) == len(a)


def test_missing_contract_column_is_named(cohort):
    valid, _ = cohort
    with pytest.raises(ValueError, match="crp_mg_l"):
        FeatureBuilder().fit(valid.drop(columns="crp_mg_l"))
    fitted = FeatureBuilder().fit(valid)
    with pytest.raises(ValueError, match="product"):
        fitted.transform(valid.drop(columns="product"))
    with pytest.raises(ValueError, match="kind"):
        FeatureBuilder(kind="forest").fit(valid)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Unseen levels and the models downstream
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def without_tarlatamab() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    train, y = synthetic_cohort(n=500, seed=1, exclude_products=("tarlatamab",))
    unseen, _ = synthetic_cohort(n=40, seed=2)
    return train, y, unseen


def test_unseen_product_is_missing_category_for_trees(without_tarlatamab):
    train, _, unseen = without_tarlatamab
    fb = FeatureBuilder("tree").fit(train)
    assert "tarlatamab" not in fb.category_levels_["product"]
    out = fb.transform(unseen)
    is_tarlatamab = unseen["product"].eq("tarlatamab").to_numpy()
    assert is_tarlatamab.any()
    assert out["product"][is_tarlatamab].isna().all()
    assert out["diagnosis"][is_tarlatamab].isna().all()  # SCLC never seen in training either
    assert out["product"][~is_tarlatamab].notna().all()
    assert list(out["product"].cat.categories) == list(fb.category_levels_["product"])
    assert _no_pd_na(out)


def test_unseen_product_is_all_zero_one_hot_for_linear(without_tarlatamab):
    train, _, unseen = without_tarlatamab
    out = FeatureBuilder("linear").fit(train).transform(unseen)
    assert "product=tarlatamab" not in out.columns
    product_columns = [c for c in out.columns if c.startswith("product=")]
    is_tarlatamab = unseen["product"].eq("tarlatamab").to_numpy()
    assert (out.loc[is_tarlatamab, product_columns] == 0).all().all()
    assert (out.loc[~is_tarlatamab, product_columns].sum(axis=1) == 1).all()
    # Costimulation "none" (bispecific) was seen, so it is set.
    assert (out.loc[is_tarlatamab, "costim=none"] == 1).all()


def test_xgboost_fits_and_predicts_with_an_unseen_product(without_tarlatamab):
    train, y, unseen = without_tarlatamab
    fb = FeatureBuilder("tree").fit(train)
    model = xgb.XGBClassifier(
        enable_categorical=True, tree_method="hist", n_estimators=30, max_depth=3, n_jobs=1
    )
    model.fit(fb.transform(train), y)
    proba = model.predict_proba(fb.transform(unseen))[:, 1]
    assert proba.shape == (len(unseen),)
    assert np.all((proba >= 0) & (proba <= 1))
    one = model.predict_proba(fb.transform(unseen.iloc[[0]]))[:, 1]
    assert one[0] == pytest.approx(proba[0], rel=1e-6)
    # The per-feature contributions (used for drivers) work on the same matrix.
    matrix = xgb.DMatrix(fb.transform(unseen), enable_categorical=True)
    contribs = model.get_booster().predict(matrix, pred_contribs=True)
    assert contribs.shape == (len(unseen), len(TREE_NAMES) + 1)


@pytest.mark.parametrize("splines", [False, True])
def test_logistic_regression_in_cross_validation(cohort, splines):
    valid, y = cohort
    pipe = Pipeline(
        [
            ("features", FeatureBuilder("linear", splines=splines)),
            ("model", LogisticRegression(C=0.5, max_iter=5000)),
        ]
    )
    folds = StratifiedKFold(4, shuffle=True, random_state=0)
    proba = cross_val_predict(pipe, valid, y, cv=folds, method="predict_proba")[:, 1]
    assert np.all((proba > 0) & (proba < 1))
    fitted = clone(pipe).fit(valid, y)
    names = fitted.named_steps["features"].get_feature_names_out()
    assert fitted.named_steps["model"].coef_.shape == (1, len(names))


def test_clone_keeps_parameters():
    fb = FeatureBuilder(kind="linear", splines=True)
    assert clone(fb).get_params() == {"kind": "linear", "splines": True}


# ----------------------------------------------------------------------------------------------
# Names for clinicians
# ----------------------------------------------------------------------------------------------


def test_labels_and_raw_columns_for_examples():
    assert feature_label("log_crp") == "CRP (mg/L)"
    assert raw_value_column("log_crp") == "crp_mg_l"
    assert raw_value_column("log_crp_missing") == "crp_mg_l"
    assert feature_label("log_crp_missing") == "CRP (mg/L) missing"
    assert raw_value_column("product=axi-cel") == "product"
    assert feature_label("product=axi-cel") == "Product: axi-cel"
    assert raw_value_column("log_platelets_spline_2") == "platelets_1e9_l"
    assert raw_value_column("flu_cy") == "lymphodepletion"
    assert raw_value_column("log2_m_easix") is None
    assert "m-EASIX" in feature_label("log2_m_easix")
    assert raw_value_column("tumour_burden") is None
    assert feature_group("tumour_burden_missing") == "tumour_burden"
    assert feature_group("log_crp_spline_1") == "crp_mg_l"
    assert feature_label("car_hematotox") == "CAR-HEMATOTOX (points)"
    assert feature_label("unknown_thing") == "unknown_thing"
    assert raw_value_column("unknown_thing") is None


def test_every_output_name_has_a_label_and_a_contract_column_or_none(cohort):
    valid, _ = cohort
    names = [
        *FeatureBuilder("tree").fit(valid).get_feature_names_out(),
        *FeatureBuilder("linear", splines=True).fit(valid).get_feature_names_out(),
    ]
    for name in names:
        label = feature_label(name)
        assert label and label != name, name
        assert ";" not in label, name  # ";" separates drivers in the score table
        raw = raw_value_column(name)
        assert raw is None or raw in BASELINE_NAMES, name


def test_category_with_no_level_seen_at_fit_stays_usable_by_xgboost():
    # other_car_t without a costim domain: costim is missing in every training row.
    rows = baseline_frame(n_copies=12)
    rows = rows[rows["product"].eq("other_car_t")].reset_index(drop=True)
    rows["costim_domain"] = ""
    train = validate(rows).valid
    fb = FeatureBuilder("tree").fit(train)
    assert fb.category_levels_["costim"] == ()
    out = fb.transform(train)
    assert out["costim"].isna().all()
    y = np.arange(len(train)) % 2
    model = xgb.XGBClassifier(enable_categorical=True, tree_method="hist", n_estimators=3)
    model.fit(out, y)
    later = fb.transform(validate(baseline_frame()).valid)
    assert later["costim"].isna().all()  # CD28 and "none" were never seen
    assert model.predict_proba(later).shape == (3, 2)


@pytest.mark.parametrize(
    ("kind", "splines"), [("tree", False), ("linear", False), ("linear", True)]
)
def test_zero_rows_transform_to_zero_rows(cohort, kind, splines):
    valid, _ = cohort
    fb = FeatureBuilder(kind, splines=splines).fit(valid)
    out = fb.transform(valid.iloc[:0])
    assert out.shape == (0, len(fb.get_feature_names_out()))


@pytest.mark.parametrize(
    ("kind", "splines"), [("tree", False), ("linear", False), ("linear", True)]
)
def test_state_as_json_rebuilds_the_same_matrix(cohort, tiny, kind, splines):
    valid, _ = cohort
    fb = FeatureBuilder(kind, splines=splines).fit(valid.iloc[:400])
    text = json.dumps(fb.to_dict(), allow_nan=False)  # plain JSON: missing numbers are null
    restored = FeatureBuilder.from_dict(json.loads(text))
    assert restored.get_params() == fb.get_params()
    assert restored.feature_names_out_ == fb.feature_names_out_
    for rows in (valid, tiny):
        pd.testing.assert_frame_equal(restored.transform(rows), fb.transform(rows),
                                      check_exact=True)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda s: s.update(kind="forest"), "unknown kind"),
        (lambda s: s.update(burden_mean=[0.0]), "values where"),
        (lambda s: s["category_levels"].update(diagnosis=["MM", "LBCL"]), "levels of diagnosis"),
        (lambda s: s.update(numeric=["shoe_size"]), "unknown numeric feature"),
        (lambda s: s.update(indicators=["hlh_history", "log_crp"], numeric=["log_crp"],
                            medians={"log_crp": 1.0}), "indicators, knots or scales"),
        (lambda s: s.pop("medians"), "medians"),
        (lambda s: s["medians"].update(log_crp=float("nan")), "non-finite"),
        (lambda s: s["spline_knots"].update(log_crp=[3.0, 2.0, 1.0, 0.0]), "knots"),
    ],
    ids=["kind", "burden", "level order", "feature", "indicator", "missing key", "nan",
         "unordered knots"],
)
def test_from_dict_refuses_a_state_it_did_not_write(cohort, edit, words):
    valid, _ = cohort
    state = FeatureBuilder("linear", splines=True).fit(valid).to_dict()
    edit(state)
    with pytest.raises(ValueError, match="not a crsrisk feature builder state") as exc:
        FeatureBuilder.from_dict(state)
    assert words in str(exc.value)


# ----------------------------------------------------------------------------------------------
# Against the previous builder (hand-written imputation, scaling, one-hot): a golden file
# ----------------------------------------------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden" / "feature_builder_v1.json"


@pytest.fixture(scope="module")
def golden() -> dict:
    """States and matrices written by the FeatureBuilder before it used scikit-learn's steps:
    fitted on ``synthetic_cohort(400, seed=11)`` without tarlatamab, applied to
    ``synthetic_cohort(40, seed=12)`` (tree categoricals as codes of the seen levels)."""
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def golden_rows(golden) -> tuple[pd.DataFrame, pd.DataFrame]:
    n, seed, excluded = golden["cohort"]["train"]
    train, _ = synthetic_cohort(n=n, seed=seed, exclude_products=tuple(excluded))
    later, _ = synthetic_cohort(*golden["cohort"]["later"])
    return train, later


def _as_numbers(matrix: pd.DataFrame) -> np.ndarray:
    """The matrix as floats, native categoricals as their codes (NaN when missing)."""
    out = matrix.copy()
    for name in CATEGORICAL_FEATURES:
        if name in out and isinstance(out[name].dtype, pd.CategoricalDtype):
            codes = out[name].cat.codes.to_numpy().astype("float64")
            out[name] = np.where(codes < 0, np.nan, codes)
    return out.to_numpy(dtype="float64")


def _golden_matrix(entry: dict) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in entry["matrix"]])


@pytest.mark.parametrize("index", [0, 1, 2], ids=["tree", "linear", "linear-splines"])
def test_same_matrix_and_state_as_the_previous_builder(golden, golden_rows, index):
    entry = golden["builders"][index]
    train, later = golden_rows
    fb = FeatureBuilder(entry["kind"], splines=entry["splines"]).fit(train)
    out = fb.transform(later)
    assert list(out.columns) == entry["columns"]
    np.testing.assert_allclose(_as_numbers(out), _golden_matrix(entry), rtol=0, atol=1e-9)
    # Unseen tarlatamab rows: missing for trees, an all-zero one-hot block for linear models.
    tarlatamab = later["product"].eq("tarlatamab").to_numpy()
    assert tarlatamab.any()
    if entry["kind"] == "linear":
        products = [c for c in out.columns if c.startswith("product=")]
        assert (out.loc[tarlatamab, products] == 0).all().all()
    state, expected = fb.to_dict(), entry["state"]
    assert state.keys() == expected.keys()
    for key in ("kind", "splines", "category_levels", "numeric", "indicators"):
        assert state.get(key) == expected.get(key), key
    numbers = {key: state[key] for key in ("burden_mean", "burden_sd")}
    numbers.update({f"{key}/{name}": value for key in ("medians", "spline_knots", "scales")
                    for name, value in state.get(key, {}).items()})
    for key, value in numbers.items():
        part, _, name = key.partition("/")
        saved = expected[part][name] if name else expected[part]
        np.testing.assert_allclose(np.array(value, dtype=float), np.array(saved, dtype=float),
                                   rtol=1e-12, atol=1e-12, err_msg=key)
    for key in ("medians", "spline_knots", "scales"):
        assert state.get(key, {}).keys() == expected.get(key, {}).keys(), key


@pytest.mark.parametrize("index", [0, 1, 2], ids=["tree", "linear", "linear-splines"])
def test_a_state_saved_by_the_previous_builder_still_loads(golden, golden_rows, index):
    entry = golden["builders"][index]
    restored = FeatureBuilder.from_dict(entry["state"])
    out = restored.transform(golden_rows[1])
    assert list(out.columns) == entry["columns"]
    np.testing.assert_allclose(_as_numbers(out), _golden_matrix(entry), rtol=0, atol=1e-12)


def test_linear_steps_are_scikit_learns_and_rebuilt_with_their_parameters(cohort):
    valid, _ = cohort
    fb = FeatureBuilder("linear", splines=True).fit(valid.iloc[:400])
    restored = FeatureBuilder.from_dict(json.loads(json.dumps(fb.to_dict())))
    fitted, rebuilt = fb.design_.pipeline, restored.design_.pipeline
    impute = fitted.named_steps["impute_encode"].named_transformers_["impute"]
    assert isinstance(impute, SimpleImputer) and impute.add_indicator
    assert impute.strategy == "median"
    one_hot = fitted.named_steps["impute_encode"].named_transformers_["one_hot"]
    assert isinstance(one_hot, OneHotEncoder) and one_hot.handle_unknown == "ignore"
    expand = fitted.named_steps["scale_expand"].named_transformers_
    assert isinstance(expand["scale"], StandardScaler)
    assert isinstance(expand["splines"], SplineTransformer)
    assert repr(rebuilt) == repr(fitted)
    for step in ("impute_encode", "scale_expand"):
        for name, ours in fitted.named_steps[step].named_transformers_.items():
            theirs = rebuilt.named_steps[step].named_transformers_[name]
            for attribute in ("statistics_", "mean_", "scale_"):
                if hasattr(ours, attribute):
                    np.testing.assert_array_equal(getattr(theirs, attribute),
                                                  getattr(ours, attribute))
            if hasattr(ours, "categories_"):
                assert ([c.tolist() for c in theirs.categories_]
                        == [c.tolist() for c in ours.categories_])
            for a, b in zip(getattr(ours, "bsplines_", []), getattr(theirs, "bsplines_", []),
                            strict=True):
                np.testing.assert_array_equal(a.t, b.t)


def test_global_pandas_output_setting_changes_nothing(cohort):
    valid, _ = cohort
    fb = FeatureBuilder("linear", splines=True).fit(valid.iloc[:300])
    plain = fb.transform(valid.iloc[300:])
    with sklearn.config_context(transform_output="pandas"):
        pd.testing.assert_frame_equal(fb.transform(valid.iloc[300:]), plain)
        refitted = FeatureBuilder("linear", splines=True).fit(valid.iloc[:300])
        pd.testing.assert_frame_equal(refitted.transform(valid.iloc[300:]), plain)


@pytest.mark.parametrize("splines", [False, True])
def test_linear_transform_is_the_column_transformers_own(cohort, splines):
    valid, _ = cohort
    fb = FeatureBuilder("linear", splines=splines).fit(valid.iloc[:300])
    rows = valid.iloc[300:]
    derived = fb.derive_.transform(rows)
    expected = fb.design_.pipeline.transform(derived)[:, fb.design_.order]
    np.testing.assert_array_equal(fb.transform(rows).to_numpy(), expected)
