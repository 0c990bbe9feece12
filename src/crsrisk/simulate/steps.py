"""The simulator's steps, from sites to the raw events, in the order they draw random numbers.

Each step draws from the one generator it is given and returns named arrays, one value per
patient. The order of the steps (and of the draws inside each) is part of the output: the same
seed gives the same cohort only while that order holds, which tests/test_simulate.py pins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from crsrisk.config import SimulationConfig
from crsrisk.contract.products import DIAGNOSES, PRODUCTS
from crsrisk.simulate.parameters import (
    AGE_MEAN,
    ANC_MEDIAN_LOGSD,
    ANY_CRS_TARGET,
    APPROVAL_YEAR,
    BETA,
    BLASTS_MEDIAN_LOGSD,
    BULKY_THRESHOLD,
    BURDEN_LOADING,
    BURDEN_MULTIPLIER,
    CREATININE_MEDIAN_LOGSD,
    DIAGNOSIS_MIX,
    DX_OFFSET,
    ECOG_CUTS,
    GRADE2_SHARE,
    HB_MEAN_SD,
    IL6_MEDIAN_LOGSD,
    LAB_MEDIAN_LOGSD,
    LD_BISPECIFIC,
    LD_CAR_T,
    LD_TISA_CEL,
    LEE_FROM_HYPOTENSION,
    LEE_FROM_HYPOXIA,
    LOADINGS,
    LYMPHOMAS,
    MARROW_DISEASES,
    PENN_FROM_HYPOTENSION,
    PENN_FROM_HYPOXIA,
    PLASMA_CELLS_MEDIAN_LOGSD,
    PREVALENCE,
    PRODUCT_MIX,
    RHO_BURDEN_INFLAMMATION,
    SEVERE_GRADE_SPLIT,
    SEVERE_TARGET,
    SPD_MEDIAN_LOGSD,
)

__all__ = [
    "PRODUCT_NAMES",
    "Draws",
    "burden_markers",
    "calibrate_intercepts",
    "cell_dose",
    "clinical",
    "costimulation",
    "demographics",
    "diagnoses",
    "events",
    "grading_scale",
    "infusion_dates",
    "labs",
    "latent_factors",
    "lymphodepletion",
    "missingness",
    "observed_labs",
    "outcome",
    "products",
    "severe_targets",
    "site_names",
    "true_log_odds",
]

Draws = dict[str, Any]  # named arrays, one value per patient (or per site)

PRODUCT_NAMES = tuple(PRODUCTS)
_DX_INDEX = {d: i for i, d in enumerate(DIAGNOSES)}
_CART_PRODUCT = np.array([PRODUCTS[p].therapy_class == "CAR-T" for p in PRODUCT_NAMES])
_LD_NAMES = np.array(("flu_cy", "bendamustine", "other", "none"), dtype=object)


# --- helpers ----------------------------------------------------------------------------------


def site_names(n_sites: int) -> list[str]:
    """``site_A``, ..., ``site_Z``, ``site_AA``, ... as spreadsheet columns are named."""
    names = []
    for i in range(n_sites):
        label, k = "", i + 1
        while k:
            k, r = divmod(k - 1, 26)
            label = chr(65 + r) + label
        names.append(f"site_{label}")
    return names


def _per_dx(dx: np.ndarray, table: dict[str, Any], default: Any) -> np.ndarray:
    """One value per patient from a per-diagnosis table (vectorised over diagnosis codes)."""
    lut = np.array([table.get(d, default) for d in DIAGNOSES], dtype=float)
    return lut[dx]


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return np.log(p / (1.0 - p))


def _choice_by_group(rng: np.random.Generator, group: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One category per row from its group's probabilities (rows of ``probs``)."""
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(group.shape[0])
    return (u[:, None] > cum[group]).sum(axis=1)


def _lab(
    rng: np.random.Generator, latent: Draws, median: np.ndarray | float,
    logsd: np.ndarray | float, w_b: np.ndarray | float, w_i: np.ndarray | float,
) -> np.ndarray:
    """Log-normal lab whose standardised log is driven by the two latent factors."""
    burden, inflammation = latent["burden"], latent["inflammation"]
    explained = w_b**2 + w_i**2 + 2 * RHO_BURDEN_INFLAMMATION * w_b * w_i
    z = w_b * burden + w_i * inflammation
    z = z + np.sqrt(1.0 - explained) * rng.standard_normal(burden.shape[0])
    return np.exp(np.log(median) + logsd * z)


def _mask(rng: np.random.Generator, p_missing: np.ndarray | float, n: int) -> np.ndarray:
    return rng.random(n) < p_missing


def calibrate_intercepts(
    eta: np.ndarray, group: np.ndarray, targets: np.ndarray, iterations: int = 60
) -> np.ndarray:
    """Per-group intercepts b so that mean(expit(b[g] + eta)) equals each group's target."""
    n_groups = targets.shape[0]
    counts = np.bincount(group, minlength=n_groups)
    lo = np.full(n_groups, -40.0)
    hi = np.full(n_groups, 40.0)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        p = expit(mid[group] + eta)
        mean = np.bincount(group, weights=p, minlength=n_groups) / np.maximum(counts, 1)
        too_high = mean > targets
        hi = np.where(too_high, mid, hi)
        lo = np.where(too_high, lo, mid)
    return 0.5 * (lo + hi)


def severe_targets() -> np.ndarray:
    """Target rate of ASTCT grade >= 3 per product, in PRODUCT_NAMES order."""
    return np.array([SEVERE_TARGET[p] for p in PRODUCT_NAMES])


# --- sites, products, diagnoses, dates ----------------------------------------------------------


def _first_days(cfg: SimulationConfig) -> np.ndarray:
    """Each product's first possible infusion day: its approval year, or the start date."""
    start = np.datetime64(cfg.start_date, "D")
    return np.array([
        max(start, np.datetime64(f"{APPROVAL_YEAR[p]}-01-01", "D"))
        if APPROVAL_YEAR[p] is not None else start
        for p in PRODUCT_NAMES
    ])


def products(rng: np.random.Generator, cfg: SimulationConfig, n: int) -> Draws:
    """Site of each patient, then a product from that site's mix."""
    n_sites, n_prod = cfg.n_sites, len(PRODUCT_NAMES)
    # Site sizes and product mixes differ (assumption: referral patterns, trial participation).
    site_weight = rng.dirichlet(np.full(n_sites, 4.0))
    site = rng.choice(n_sites, size=n, p=site_weight)
    base_mix = np.array([PRODUCT_MIX[p] for p in PRODUCT_NAMES])
    cart_share = base_mix[_CART_PRODUCT].sum()
    # Products approved after the end date are not used (the "other" products always are).
    available = _first_days(cfg) <= np.datetime64(cfg.end_date, "D")
    site_mix = base_mix * available * np.exp(rng.normal(0.0, 0.6, size=(n_sites, n_prod)))
    # Keep each site's CAR-T share near the overall 60 % (logit sd 0.4), mix within class free.
    site_cart = expit(_logit(cart_share) + rng.normal(0.0, 0.4, n_sites))
    for in_class, share in ((_CART_PRODUCT, site_cart), (~_CART_PRODUCT, 1 - site_cart)):
        site_mix[:, in_class] *= (share / site_mix[:, in_class].sum(axis=1))[:, None]
    product = _choice_by_group(rng, site, site_mix)
    return {"site": site, "product": product, "is_cart": _CART_PRODUCT[product],
            "prod_name": np.array(PRODUCT_NAMES, dtype=object)[product]}


def diagnoses(rng: np.random.Generator, product: np.ndarray) -> Draws:
    """Diagnosis given product, and the disease groups the later steps need."""
    dx_probs = np.zeros((len(PRODUCT_NAMES), len(DIAGNOSES)))
    for j, name in enumerate(PRODUCT_NAMES):
        for d, p in DIAGNOSIS_MIX[name].items():
            dx_probs[j, _DX_INDEX[d]] = p
    dx = _choice_by_group(rng, product, dx_probs)
    dx_name = np.array(DIAGNOSES, dtype=object)[dx]
    return {"dx": dx, "dx_name": dx_name, "is_lymphoma": np.isin(dx_name, LYMPHOMAS),
            "is_all": dx_name == "B-ALL", "is_mm": dx_name == "MM"}


def infusion_dates(rng: np.random.Generator, cfg: SimulationConfig, product: np.ndarray
                   ) -> np.ndarray:
    """Infusion day of each patient, never before the product's approval year."""
    first_day = _first_days(cfg)[product]
    span = (np.datetime64(cfg.end_date, "D") - first_day).astype(np.int64)
    # Volume grows over time (assumption): density rising linearly from 1 to 2 across the window.
    frac = np.sqrt(1.0 + 3.0 * rng.random(product.shape[0])) - 1.0
    return first_day + np.floor(frac * (span + 1)).clip(max=span).astype(np.int64)


# --- patients -----------------------------------------------------------------------------------


def demographics(rng: np.random.Generator, dx: Draws, prod_name: np.ndarray) -> Draws:
    """Age, sex and weight; tisa-cel B-ALL is paediatric (ELIANA)."""
    n = prod_name.shape[0]
    age = np.clip(_per_dx(dx["dx"], AGE_MEAN, 60) + rng.normal(0, 11, n), 18, 90)
    paediatric = dx["is_all"] & (prod_name == "tisa-cel")
    age = np.where(paediatric, np.clip(rng.normal(12, 6, n), 1, 25), age)
    adult_all = dx["is_all"] & ~paediatric  # lit: public B-ALL cohort median age 33; trials ~40-47
    age = np.where(adult_all, np.clip(rng.normal(38, 15, n), 18, 85), age)
    male = rng.random(n) < PREVALENCE["male"]
    adult_weight = np.clip(np.where(male, 84.0, 71.0) + rng.normal(0, 16, n), 38, 200)
    child_weight = (8.0 + 2.6 * age) * np.exp(rng.normal(0, 0.15, n))
    return {"age": age, "male": male, "weight": np.where(age < 18, child_weight, adult_weight)}


def latent_factors(rng: np.random.Generator, n: int) -> Draws:
    """Tumour burden and inflammation: standard normal, correlated RHO_BURDEN_INFLAMMATION."""
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    rho = RHO_BURDEN_INFLAMMATION
    return {"burden": z1, "inflammation": rho * z1 + np.sqrt(1 - rho**2) * z2}


def _lab_medians(dx: np.ndarray) -> Draws:
    """Per patient, the median and log-sd of each diagnosis-specific lab."""
    out = {}
    for key in ("ldh", "crp", "ferritin", "plt"):
        out[key] = (_per_dx(dx, {d: v[key][0] for d, v in LAB_MEDIAN_LOGSD.items()}, np.nan),
                    _per_dx(dx, {d: v[key][1] for d, v in LAB_MEDIAN_LOGSD.items()}, np.nan))
    return out


def _haemoglobin(rng: np.random.Generator, dx: np.ndarray, latent: Draws) -> np.ndarray:
    mean = _per_dx(dx, {d: v[0] for d, v in HB_MEAN_SD.items()}, 11.0)
    sd = _per_dx(dx, {d: v[1] for d, v in HB_MEAN_SD.items()}, 1.6)
    w_b, w_i = LOADINGS["hb"]
    explained = w_b**2 + w_i**2 + 2 * RHO_BURDEN_INFLAMMATION * w_b * w_i
    noise = np.sqrt(1 - explained) * rng.standard_normal(dx.shape[0])
    return mean + sd * (w_b * latent["burden"] + w_i * latent["inflammation"] + noise)


def labs(rng: np.random.Generator, dx: Draws, age: np.ndarray, latent: Draws) -> Draws:
    """Biological baseline labs (before site assay differences), within physiological bounds."""
    medians = _lab_medians(dx["dx"])
    plt_wb = np.where(np.isin(dx["dx_name"], MARROW_DISEASES), LOADINGS["plt_marrow"][0],
                      LOADINGS["plt"][0])
    out = {
        "ldh": _lab(rng, latent, *medians["ldh"], *LOADINGS["ldh"]),
        "crp": _lab(rng, latent, *medians["crp"], *LOADINGS["crp"]),
        "ferritin": _lab(rng, latent, *medians["ferritin"], *LOADINGS["ferritin"]),
        "plt": _lab(rng, latent, *medians["plt"], plt_wb, LOADINGS["plt"][1]),
        "il6": _lab(rng, latent, *IL6_MEDIAN_LOGSD, *LOADINGS["il6"]),
        "anc": _lab(rng, latent, *ANC_MEDIAN_LOGSD, *LOADINGS["anc"]),
        "hb": _haemoglobin(rng, dx["dx"], latent),
    }
    # Creatinine rises with age (assumption); children have lower values.
    median, logsd = CREATININE_MEDIAN_LOGSD
    out["creat"] = np.exp(np.log(median) + 0.006 * (age - 60)
                          + logsd * rng.standard_normal(age.shape[0])) * np.where(age < 18, 0.6, 1)
    # Physiological / contract bounds (contract ranges; lower limits of detection: assumption).
    bounds = {"ldh": (60, 50000), "crp": (0.2, 1000), "ferritin": (5, 200000), "plt": (2, 3000),
              "il6": (0.5, 1e6), "anc": (0.01, 200), "hb": (4.0, 25.0), "creat": (0.1, 30)}
    out = {key: np.clip(value, *bounds[key]) for key, value in out.items()}
    out["medians"] = medians
    return out


def burden_markers(rng: np.random.Generator, dx: np.ndarray, burden: np.ndarray) -> Draws:
    """SPD, marrow blasts and plasma cells tracking the latent burden; bulky disease."""
    n = dx.shape[0]
    marker = BURDEN_LOADING * burden + np.sqrt(1 - BURDEN_LOADING**2) * rng.standard_normal(n)
    spd_med = _per_dx(dx, {d: v[0] for d, v in SPD_MEDIAN_LOGSD.items()}, 30.0)
    spd_sd = _per_dx(dx, {d: v[1] for d, v in SPD_MEDIAN_LOGSD.items()}, 1.0)
    blasts_med, blasts_sd = BLASTS_MEDIAN_LOGSD
    plasma_med, plasma_sd = PLASMA_CELLS_MEDIAN_LOGSD
    return {
        "spd_med": spd_med,
        "spd": np.clip(np.exp(np.log(spd_med) + spd_sd * marker), 0.5, 2000),
        "blasts": np.clip(np.exp(np.log(blasts_med) + blasts_sd * marker), 0.01, 98),
        "plasma": np.clip(np.exp(np.log(plasma_med) + plasma_sd * marker), 0.5, 95),
        # Bulky disease tracks SPD (assumption): the top quarter of a noisy copy of the marker.
        "bulky": marker + 0.5 * rng.standard_normal(n) > BULKY_THRESHOLD,
    }


def clinical(rng: np.random.Generator, dx: Draws, is_cart: np.ndarray, latent: Draws) -> Draws:
    """ECOG, prior lines, bridging, HLH and autoimmune history."""
    n = is_cart.shape[0]
    burden, inflammation = latent["burden"], latent["inflammation"]
    # ECOG from a latent fitness score worsened by burden and inflammation (assumption).
    ecog_latent = 0.35 * burden + 0.25 * inflammation + 0.85 * rng.standard_normal(n)
    ecog_latent /= np.sqrt(0.35**2 + 0.25**2 + 2 * RHO_BURDEN_INFLAMMATION * 0.35 * 0.25 + 0.85**2)
    dx_name = dx["dx_name"]
    lam = np.where(dx["is_mm"], 4.0,
                   np.where(dx["is_all"], 1.5, np.where(dx_name == "SCLC", 1.2, 2.0)))
    p_bridge = np.where(is_cart, expit(_logit(PREVALENCE["bridging_car_t"]) + 0.5 * burden),
                        PREVALENCE["bridging_bispecific"])
    return {
        "ecog": np.searchsorted(ECOG_CUTS, ecog_latent),
        "prior_lines": np.clip(1 + rng.poisson(lam), 0, 25),  # assumption: medians 2-5
        "bridging": rng.random(n) < p_bridge,
        "hlh": rng.random(n) < PREVALENCE["hlh"],
        "autoimmune": rng.random(n) < PREVALENCE["autoimmune"],
    }


def lymphodepletion(rng: np.random.Generator, product: np.ndarray) -> np.ndarray:
    """Lymphodepletion regimen by product (tisa-cel gets bendamustine more often)."""
    ld_probs = np.array([LD_CAR_T if cart else LD_BISPECIFIC for cart in _CART_PRODUCT])
    ld_probs[PRODUCT_NAMES.index("tisa-cel")] = LD_TISA_CEL
    return _LD_NAMES[_choice_by_group(rng, product, ld_probs)]


def cell_dose(rng: np.random.Generator, prod_name: np.ndarray, is_all: np.ndarray,
              weight: np.ndarray) -> np.ndarray:
    """CAR-T cell dose in 1e6 CAR+ cells/kg, from each product's label.

    Assumptions from the labels: axi-cel 2/kg capped at 2e8; brexu-cel 2/kg MCL, 1/kg B-ALL;
    tisa-cel ~3/kg paediatric, 0.6-6e8 flat in adults; liso-cel 1e8 flat; obe-cel 4.1e8 flat;
    ide-cel 3-4.6e8 flat; cilta-cel 0.75/kg.
    """
    n = prod_name.shape[0]
    dose_noise = np.exp(rng.normal(0, 0.08, n))
    flat = {
        "tisa-cel": np.exp(rng.normal(np.log(300), 0.4, n)),
        "liso-cel": np.full(n, 100.0),
        "obe-cel": np.full(n, 410.0),
        "ide-cel": rng.uniform(300, 460, n),
    }
    dose = np.exp(rng.normal(np.log(2.0), 0.7, n))  # other_car_t
    dose = np.where(prod_name == "axi-cel", np.minimum(2.0, 200 / weight) * dose_noise, dose)
    brexu_per_kg = np.where(is_all, 1.0, 2.0)
    brexu = np.minimum(brexu_per_kg, brexu_per_kg * 100 / weight) * dose_noise
    dose = np.where(prod_name == "brexu-cel", brexu, dose)
    for name, total in flat.items():
        dose = np.where(prod_name == name, total / weight, dose)
    tisa_child = (prod_name == "tisa-cel") & (weight <= 50)
    dose = np.where(tisa_child, np.exp(rng.normal(np.log(3.0), 0.4, n)), dose)
    cilta_dose = np.clip(np.exp(rng.normal(np.log(0.72), 0.15, n)), 0.5, 1.0)
    dose = np.where(prod_name == "cilta-cel", cilta_dose, dose)
    return np.clip(dose, 0.05, 1000)


def costimulation(rng: np.random.Generator, product: np.ndarray, prod_name: np.ndarray
                  ) -> np.ndarray:
    """Costimulatory domain of the product; other CAR-Ts split evenly (assumption)."""
    costim_other = np.where(rng.random(product.shape[0]) < 0.5, "CD28", "4-1BB")
    product_costim = [PRODUCTS[p].costim_domain or "" for p in PRODUCT_NAMES]
    costim = np.array(product_costim, dtype=object)[product]
    return np.where(prod_name == "other_car_t", costim_other, costim).astype(object)


# --- true risk ----------------------------------------------------------------------------------


def _burden_term(dx: Draws, markers: Draws) -> np.ndarray:
    lymphoma, b_all, mm = dx["is_lymphoma"], dx["is_all"], dx["is_mm"]
    spd_med = np.where(lymphoma, markers["spd_med"], 1.0)
    return (
        np.where(lymphoma, BETA["spd"] * np.log(markers["spd"] / spd_med), 0.0)
        + np.where(b_all, BETA["blasts"] * np.log(markers["blasts"] / BLASTS_MEDIAN_LOGSD[0]), 0)
        + np.where(mm, BETA["plasma_cells"]
                   * np.log(markers["plasma"] / PLASMA_CELLS_MEDIAN_LOGSD[0]), 0)
        + np.where(lymphoma & markers["bulky"], BETA["bulky"], 0.0)
    )


def true_log_odds(p: Draws) -> np.ndarray:
    """Log-odds of severe CRS before the per-product intercept (``p``: the patients' draws)."""
    dx, lab, clin = p["dx"], p["labs"], p["clinical"]
    med = {key: value[0] for key, value in lab["medians"].items()}
    mult = np.array([BURDEN_MULTIPLIER.get(name, 1.0) for name in PRODUCT_NAMES])[p["product"]]
    cart = p["is_cart"]
    return (
        _per_dx(dx["dx"], DX_OFFSET, 0.0)
        + mult * _burden_term(dx, p["markers"])
        + mult * BETA["ldh"] * np.log(lab["ldh"] / med["ldh"])
        + BETA["crp"] * np.log(lab["crp"] / med["crp"])
        + mult * BETA["plt"] * np.log(lab["plt"] / med["plt"])
        + BETA["ferritin"] * np.log(lab["ferritin"] / med["ferritin"])
        + BETA["il6"] * np.log(lab["il6"] / IL6_MEDIAN_LOGSD[0])
        + np.where(cart & (p["ld"] == "flu_cy"), BETA["flu_cy"], 0.0)
        + np.where(cart, BETA["cell_dose"] * np.log(p["dose"]), 0.0)
        + BETA["hlh"] * clin["hlh"]
        + BETA["autoimmune"] * clin["autoimmune"]
        + BETA["bridging"] * clin["bridging"]
        + BETA["ecog"] * clin["ecog"]
        + BETA["ecog_ge2"] * (clin["ecog"] >= 2)
        + BETA["prior_lines"] * (clin["prior_lines"] - 3)
    )


# --- outcome, events, grading, missingness -----------------------------------------------------


def outcome(rng: np.random.Generator, true_risk: np.ndarray, product: np.ndarray,
            is_cart: np.ndarray) -> np.ndarray:
    """Full ASTCT grade 0-5: severe ~ Bernoulli(true risk), milder grades at product rates."""
    n = true_risk.shape[0]
    severe = rng.random(n) < true_risk
    split = np.cumsum(SEVERE_GRADE_SPLIT)
    u = rng.random(n)
    severe_grade = 3 + (u > split[0]) + (u > split[1])
    target = severe_targets()[product]
    any_rate = np.array([ANY_CRS_TARGET[p] for p in PRODUCT_NAMES])[product]
    p_any_given_ns = np.clip((any_rate - target) / (1 - target), 0, 1)
    share2 = np.where(is_cart, GRADE2_SHARE["CAR-T"], GRADE2_SHARE["bispecific"])
    u_any, u_two = rng.random(n), rng.random(n)
    mild_grade = np.where(u_any < p_any_given_ns, np.where(u_two < share2, 2, 1), 0)
    return np.where(severe, severe_grade, mild_grade).astype(np.int64)


def events(rng: np.random.Generator, grade: np.ndarray) -> Draws:
    """Raw events consistent with the grade: hypotension and hypoxia levels, fever, death.

    The worse of hypotension and hypoxia sets the level (grade - 1 for grades 2-4); which of
    the two drives it and the level of the other are assumptions.
    """
    n = grade.shape[0]
    level = np.clip(grade - 1, 0, 3)
    level = np.where(grade == 5, 3, level)  # deaths: worst support before death (assumption)
    driver = rng.random(n)
    # 0: hypotension drives, 1: hypoxia drives, 2: both at the level.
    driver = np.where(driver < 0.45, 0, np.where(driver < 0.8, 1, 2))
    other_level = np.floor(rng.random(n) * level).astype(np.int64)  # uniform in 0..level-1
    return {"hypotension": np.where(driver == 1, other_level, level),
            "hypoxia": np.where(driver == 0, other_level, level),
            "fever": grade >= 1, "death": grade == 5}


def grading_scale(rng: np.random.Generator, cfg: SimulationConfig, site: np.ndarray,
                  grade: np.ndarray, ev: Draws) -> tuple[np.ndarray, np.ndarray]:
    """The scale each patient's site reports on, and the grade on that scale."""
    n_sites = cfg.n_sites
    site_order = rng.permutation(n_sites)
    site_scale_draw = rng.random(n_sites) < 0.5
    other_sites = np.zeros(n_sites, dtype=bool)
    other_sites[site_order[:round(cfg.other_scale_fraction * n_sites)]] = True
    site_scale = np.where(other_sites, np.where(site_scale_draw, "Lee2014", "Penn"), "ASTCT")
    scale = site_scale[site]
    hypot, hypox = ev["hypotension"], ev["hypoxia"]
    lee = np.maximum(LEE_FROM_HYPOTENSION[hypot], LEE_FROM_HYPOXIA[hypox])
    penn = np.maximum(PENN_FROM_HYPOTENSION[hypot], PENN_FROM_HYPOXIA[hypox])
    lee = np.where(ev["death"], 5, np.where(ev["fever"], np.maximum(lee, 1), 0))
    penn = np.where(ev["death"], 5, np.where(ev["fever"], np.maximum(penn, 1), 0))
    return scale, np.where(scale == "Lee2014", lee, np.where(scale == "Penn", penn, grade))


def missingness(rng: np.random.Generator, cfg: SimulationConfig, p: Draws) -> Draws:
    """Which values are missing, not completely at random (by site, diagnosis and fitness)."""
    n, n_sites, site = p["site"].shape[0], cfg.n_sites, p["site"]
    is_cart, dx = p["is_cart"], p["dx"]

    def by_site(base: float, spread: float) -> np.ndarray:
        return expit(_site_logit(rng, base, spread, n_sites))[site]

    fit = p["clinical"]["ecog"] == 0
    miss = {"sex": _mask(rng, 0.015, n)}
    miss["weight"] = _mask(rng, by_site(0.03, 0.8), n)
    miss["ecog"] = _mask(rng, by_site(0.08, 0.8), n)
    miss["prior_lines"] = _mask(rng, 0.04, n)
    miss["bridging"] = _mask(rng, np.where(is_cart, 0.05, 0.10), n)
    miss["ld"] = _mask(rng, np.where(is_cart, 0.03, 0.05), n)
    miss["dose"] = ~is_cart | _mask(rng, by_site(0.08, 0.8), n)
    miss["ldh"] = _mask(rng, by_site(0.05, 0.7), n)
    # Fitter patients (ECOG 0) get fewer inflammation markers drawn (assumption).
    miss["crp"] = _mask(rng, expit(_site_logit(rng, 0.10, 1.0, n_sites)[site] + 0.8 * fit), n)
    miss["ferritin"] = _mask(rng, expit(_site_logit(rng, 0.25, 1.0, n_sites)[site] + 0.8 * fit),
                             n)
    for key, rate in (("plt", 0.02), ("anc", 0.03), ("hb", 0.02), ("creat", 0.03)):
        miss[key] = _mask(rng, rate, n)
    # IL-6 is measured routinely at a quarter of the sites only (assumption).
    il6_sites = np.zeros(n_sites, dtype=bool)
    il6_sites[rng.permutation(n_sites)[: max(1, round(0.25 * n_sites))]] = True
    miss["il6"] = _mask(rng, np.where(il6_sites[site], 0.15, 0.97), n)
    miss["spd"] = ~dx["is_lymphoma"] | _mask(rng, by_site(0.25, 0.8), n)
    miss["bulky"] = ~dx["is_lymphoma"] | _mask(rng, 0.15, n)
    miss["blasts"] = ~dx["is_all"] | _mask(rng, 0.10, n)
    miss["plasma"] = ~dx["is_mm"] | _mask(rng, 0.15, n)
    miss["autoimmune"] = _mask(rng, by_site(0.15, 1.0), n)
    miss["hlh"] = _mask(rng, by_site(0.20, 1.0), n)
    return miss


def _site_logit(rng: np.random.Generator, base: float, spread: float, n_sites: int
                ) -> np.ndarray:
    """Per-site missing probability on the logit scale around ``base`` (assumption)."""
    return _logit(base) + rng.normal(0.0, spread, n_sites)


def observed_labs(rng: np.random.Generator, cfg: SimulationConfig, site: np.ndarray,
                  lab: Draws) -> Draws:
    """Recorded labs: sites calibrate assays slightly differently (assumption).

    The recorded value is the biological one times a site factor; the true risk uses the
    biological value.
    """
    def site_factor(spread: float) -> np.ndarray:
        return np.exp(rng.normal(0.0, spread, cfg.n_sites))[site]

    return {"crp": np.clip(lab["crp"] * site_factor(0.15), 0, 1000),
            "ldh": np.clip(lab["ldh"] * site_factor(0.06), 20, 50000),
            "ferritin": np.clip(lab["ferritin"] * site_factor(0.12), 0, 200000),
            "plt": np.clip(lab["plt"] * site_factor(0.04), 0, 3000)}
