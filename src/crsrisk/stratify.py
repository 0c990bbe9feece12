"""Enrolment strata from predicted severe-CRS risk, expected events, and block randomisation.

Trial teams stratify enrolment by each patient's calibrated probability of severe CRS (ASTCT
grade >= 3). This module cuts the risks into strata (quantile strata of the cohort at hand or
fixed thresholds), summarises each stratum with the number of severe-CRS events to expect (an
exact Poisson-binomial interval, since every patient has their own probability), and assigns
treatment arms by stratified permuted blocks.

Boundary convention: strata are closed below and open above, ``[a, b)``; the last stratum is
closed on both sides, ``[a, 1]``. A risk equal to a threshold therefore belongs to the stratum
*above* it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy.signal import fftconvolve

from crsrisk.errors import CrsriskError

__all__ = [
    "SUMMARY_COLUMNS",
    "StratificationError",
    "assign_strata",
    "expected_events_interval",
    "poisson_binomial_pmf",
    "randomize",
    "stratify",
    "stratum_summary",
]

RISK = "risk"
STRATUM = "stratum"
ARM = "arm"
SUMMARY_COLUMNS: tuple[str, ...] = (
    "stratum",
    "n",
    "risk_min",
    "risk_max",
    "mean_risk",
    "expected_events",
    "events_lower",
    "events_upper",
)

# Probabilities per block of the vectorised dynamic programme at the leaves of the product tree.
_LEAF = 64
# Below this length np.convolve (exact, no round-off below zero) beats an FFT.
_DIRECT_CONVOLVE = 512
# Slack on the CDF when reading quantiles, so that a CDF equal to the target probability in
# exact arithmetic is not pushed to the next count by round-off.
_CDF_SLACK = 1e-12
# Decimals in stratum labels: at least three, more where a cut point needs them.
_MIN_DECIMALS = 3
_MAX_DECIMALS = 6


class StratificationError(CrsriskError, ValueError):
    """Strata, summaries or arm assignments cannot be made from the arguments given.

    The message is one sentence naming the problem and the fix.
    """


# --- validation helpers -------------------------------------------------------------------------


def _examples(index: pd.Index, limit: int = 5) -> str:
    shown = ", ".join(repr(label) for label in index[:limit].tolist())
    return shown + (", ..." if len(index) > limit else "")


def _risk_values(risk: pd.Series, what: str = "risk") -> np.ndarray:
    """The risks as a float array, refusing non-numeric, missing and out-of-range values."""
    if not isinstance(risk, pd.Series):
        raise StratificationError(
            f"{what} must be a pandas Series, got {type(risk).__name__}; pass the risk column "
            "of the scored table."
        )
    if pd.api.types.is_bool_dtype(risk.dtype) or not pd.api.types.is_numeric_dtype(risk.dtype):
        raise StratificationError(
            f"{what} has dtype {risk.dtype}, not numbers; pass calibrated probabilities in "
            "[0, 1] as floats."
        )
    values = risk.to_numpy(dtype=float, na_value=np.nan)
    missing = np.isnan(values)
    if missing.any():
        raise StratificationError(
            f"{what} is missing for {int(missing.sum())} patient(s) (index "
            f"{_examples(risk.index[missing])}); score or drop them before stratifying."
        )
    outside = (values < 0) | (values > 1)
    if outside.any():
        raise StratificationError(
            f"{what} lies outside [0, 1] for {int(outside.sum())} patient(s) (index "
            f"{_examples(risk.index[outside])}); pass calibrated probabilities, not scores or "
            "percentages."
        )
    return values


def _probabilities(p: np.ndarray) -> np.ndarray:
    values = np.asarray(p, dtype=float)
    if values.ndim != 1:
        raise StratificationError(
            f"probabilities must be one-dimensional, got shape {values.shape}; pass one "
            "probability per patient."
        )
    if not np.all((values >= 0) & (values <= 1)):  # also catches NaN
        raise StratificationError(
            "probabilities must lie in [0, 1] and not be NaN; pass calibrated risks."
        )
    return values


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, Real) or not 0 < level < 1:
        raise StratificationError(
            f"level must be a probability strictly between 0 and 1, got {level!r}; use e.g. "
            "0.95 for a 95% interval."
        )
    return float(level)


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


# --- strata -------------------------------------------------------------------------------------


def _simplest_cut(below: float, above: float) -> float:
    """The shortest decimal c with below < c <= above (and c < 1 where possible)."""
    for decimals in range(1, 18):
        scale = 10.0**decimals
        cut = round((math.floor(below * scale) + 1) / scale, decimals)
        if below < cut <= above and cut < 1:
            return cut
    return above


def _quantile_cuts(values: np.ndarray, n_strata: int) -> list[float]:
    """Cut points giving ``n_strata`` non-empty strata of near-equal size, ties kept together."""
    distinct, counts = np.unique(values, return_counts=True)
    if n_strata > len(distinct):
        raise StratificationError(
            f"{n_strata} quantile strata need at least {n_strata} distinct risks, but there are "
            f"{len(distinct)}; ask for fewer strata or give thresholds."
        )
    # below[j]: patients under a cut placed between distinct[j] and distinct[j + 1].
    below = np.cumsum(counts)[:-1]
    n = len(values)
    chosen: list[int] = []
    previous = -1
    for i in range(1, n_strata):
        target = i * n / n_strata
        at = int(np.searchsorted(below, target))
        nearest = [j for j in (at - 1, at) if 0 <= j < len(below)]
        best = min(nearest, key=lambda j: (abs(below[j] - target), j))
        # Leave room for the cuts still to place so that every stratum keeps a patient.
        latest = len(below) - (n_strata - i)
        best = min(max(best, previous + 1), latest)
        chosen.append(best)
        previous = best
    return [_simplest_cut(float(distinct[j]), float(distinct[j + 1])) for j in chosen]


def _checked_thresholds(thresholds: Sequence[float] | None) -> list[float]:
    if isinstance(thresholds, str | bytes) or not isinstance(thresholds, Sequence | np.ndarray):
        raise StratificationError(
            f"thresholds must be a sequence of numbers, got {thresholds!r}; pass e.g. [0.03, 0.12]."
        )
    try:
        cuts = [float(t) for t in thresholds]
    except (TypeError, ValueError):
        raise StratificationError(
            f"thresholds must be numbers, got {list(thresholds)!r}; pass e.g. [0.03, 0.12]."
        ) from None
    if not cuts:
        raise StratificationError(
            "thresholds is empty, which gives a single stratum; pass at least one threshold."
        )
    if not all(0 < t < 1 for t in cuts):  # also catches NaN
        raise StratificationError(
            f"thresholds must lie strictly between 0 and 1, got {cuts}; give risks as "
            "probabilities (0.03, not 3)."
        )
    if any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
        raise StratificationError(
            f"thresholds must be strictly increasing, got {cuts}; sort them and remove duplicates."
        )
    return cuts


def _labels(cuts: Sequence[float]) -> list[str]:
    """``S1 [0.000, a)``, ..., ``SK [b, 1.000]``, edges written exactly where feasible."""
    edges = [0.0, *cuts, 1.0]
    exact = (
        d
        for d in range(_MIN_DECIMALS, _MAX_DECIMALS + 1)
        if all(float(f"{edge:.{d}f}") == edge for edge in edges)
    )
    decimals = next(exact, _MAX_DECIMALS)
    # Thresholds closer than the rounding still get edges that tell them apart.
    while len({f"{edge:.{decimals}f}" for edge in edges}) < len(edges) and decimals < 17:
        decimals += 1
    shown = [f"{edge:.{decimals}f}" for edge in edges]
    last = len(edges) - 2
    return [
        f"S{k + 1} [{shown[k]}, {shown[k + 1]}{']' if k == last else ')'}"
        for k in range(len(edges) - 1)
    ]


def assign_strata(
    risk: pd.Series,
    *,
    n_strata: int | None = None,
    thresholds: Sequence[float] | None = None,
) -> pd.Series:
    """Assign each patient to a risk stratum.

    Parameters
    ----------
    risk : pandas.Series
        Calibrated probability of severe CRS per patient, in [0, 1], without missing values.
    n_strata : int, optional
        Number of quantile strata (at least 2) of the risks given. Patients with equal risk are
        always in the same stratum, so sizes are as equal as the ties allow; every stratum has at
        least one patient. Each cut point is the shortest decimal between the highest risk below
        it and the lowest risk above it.
    thresholds : sequence of float, optional
        Strictly increasing cut points inside (0, 1); ``K - 1`` thresholds give ``K`` strata,
        some of which may be empty. Exactly one of `n_strata` and `thresholds` must be given.

    Returns
    -------
    pandas.Series
        Ordered categorical named ``stratum``, aligned with `risk`'s index, with one category per
        stratum (including empty ones) from lowest to highest risk. Labels give the range, e.g.
        ``"S1 [0.000, 0.031)"``, ``"S2 [0.031, 0.120)"``, ``"S3 [0.120, 1.000]"``: strata are
        closed below and open above, so a risk equal to a threshold falls in the upper stratum.
        Labels show at least three decimals, and up to six where a cut point needs them to be
        exact; the exact cut points are in ``result.attrs["thresholds"]`` and, passed back as
        `thresholds`, reproduce the same strata.

    Raises
    ------
    StratificationError
        If both or neither of `n_strata` and `thresholds` are given, `n_strata` is below 2 or
        above the number of distinct risks, thresholds are not strictly increasing inside (0, 1),
        or risks are missing, non-numeric or outside [0, 1].
    """
    if (n_strata is None) == (thresholds is None):
        raise StratificationError(
            "give exactly one of n_strata (quantile strata) and thresholds (fixed cut points), "
            f"got {'both' if n_strata is not None else 'neither'}."
        )
    values = _risk_values(risk)
    if n_strata is not None:
        if not _is_int(n_strata) or n_strata < 2:
            raise StratificationError(
                f"n_strata must be an integer of at least 2, got {n_strata!r}; ask for 2 or "
                "more strata."
            )
        cuts = _quantile_cuts(values, int(n_strata))
    else:
        cuts = _checked_thresholds(thresholds)
    codes = np.searchsorted(np.asarray(cuts), values, side="right")
    categories = _labels(cuts)
    strata = pd.Series(
        pd.Categorical.from_codes(codes, categories=categories, ordered=True),
        index=risk.index,
        name=STRATUM,
    )
    strata.attrs["thresholds"] = tuple(cuts)
    return strata


# --- expected events ----------------------------------------------------------------------------


def _multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if min(len(a), len(b)) < _DIRECT_CONVOLVE:
        return np.convolve(a, b)
    # FFT round-off leaves values of order 1e-17 that can be negative: no count has negative
    # probability.
    return np.clip(fftconvolve(a, b), 0.0, None)


def poisson_binomial_pmf(p: np.ndarray) -> np.ndarray:
    """Exact distribution of the number of events among independent Bernoulli trials.

    Parameters
    ----------
    p : numpy.ndarray
        One-dimensional event probabilities, each in [0, 1].

    Returns
    -------
    numpy.ndarray
        Array of length ``len(p) + 1`` whose entry ``k`` is the probability of exactly ``k``
        events; it sums to 1. Entries are accurate to about 1e-15 in absolute terms, so far-tail
        probabilities below that are not resolved.

    Raises
    ------
    StratificationError
        If `p` is not one-dimensional or has values outside [0, 1] or NaN.
    """
    probs = _probabilities(p)
    n = len(probs)
    if n == 0:
        return np.ones(1)
    # Leaves: a vectorised two-term recurrence over blocks of _LEAF probabilities (padding with
    # p = 0 multiplies by 1), then a balanced product tree of convolutions.
    n_blocks = -(-n // _LEAF)
    padded = np.zeros(n_blocks * _LEAF)
    padded[:n] = probs
    padded = padded.reshape(n_blocks, _LEAF)
    pmf = np.zeros((n_blocks, _LEAF + 1))
    pmf[:, 0] = 1.0
    for j in range(_LEAF):
        q = padded[:, j : j + 1]
        pmf[:, 1 : j + 2] = pmf[:, 1 : j + 2] * (1 - q) + pmf[:, : j + 1] * q
        pmf[:, 0] *= 1 - padded[:, j]
    polys = list(pmf)
    while len(polys) > 1:
        paired = [_multiply(a, b) for a, b in zip(polys[::2], polys[1::2], strict=False)]
        if len(polys) % 2:
            paired.append(polys[-1])
        polys = paired
    result = polys[0][: n + 1].copy()
    return result / result.sum()


def expected_events_interval(p: np.ndarray, level: float = 0.95) -> tuple[float, int, int]:
    """Expected number of events and its equal-tailed Poisson-binomial interval.

    Parameters
    ----------
    p : numpy.ndarray
        One-dimensional event probabilities, each in [0, 1].
    level : float, default 0.95
        Coverage of the interval, strictly between 0 and 1.

    Returns
    -------
    expected : float
        ``sum(p)``.
    lower, upper : int
        The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the number of events (the
        smallest counts whose cumulative probability reaches those levels, as
        ``scipy.stats.binom.ppf``). When few events are expected the interval can exclude
        `expected`: one patient at 1% risk gives ``(0.01, 0, 0)``.

    Raises
    ------
    StratificationError
        If `p` is invalid or `level` is not strictly between 0 and 1.
    """
    level = _check_level(level)
    probs = _probabilities(p)
    cdf = np.cumsum(poisson_binomial_pmf(probs))
    cdf[-1] = 1.0
    tail = (1 - level) / 2
    lower = int(np.searchsorted(cdf, tail - _CDF_SLACK, side="left"))
    upper = int(np.searchsorted(cdf, 1 - tail - _CDF_SLACK, side="left"))
    return float(probs.sum()), lower, upper


def _as_strata(strata: pd.Series, index: pd.Index | None = None) -> pd.Series:
    """`strata` as a categorical Series, refusing missing strata and a misaligned index."""
    if not isinstance(strata, pd.Series):
        raise StratificationError(
            f"strata must be a pandas Series, got {type(strata).__name__}; pass the output of "
            "assign_strata."
        )
    if index is not None and not strata.index.equals(index):
        raise StratificationError(
            "strata are not aligned with the patient table (their indexes differ); pass the "
            "output of assign_strata on this table's risk column."
        )
    if not isinstance(strata.dtype, pd.CategoricalDtype):
        strata = strata.astype("category")
    missing = strata.isna().to_numpy()
    if missing.any():
        raise StratificationError(
            f"{int(missing.sum())} patient(s) have no stratum (index "
            f"{_examples(strata.index[missing])}); assign every patient a stratum first."
        )
    return strata


def stratum_summary(frame: pd.DataFrame, strata: pd.Series, level: float = 0.95) -> pd.DataFrame:
    """Size, risk range and expected severe-CRS events of each stratum.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient table with a ``risk`` column (calibrated probabilities in [0, 1]).
    strata : pandas.Series
        Stratum of each patient, with the same index as `frame` (as from `assign_strata`).
    level : float, default 0.95
        Coverage of the interval on the number of events.

    Returns
    -------
    pandas.DataFrame
        One row per stratum category, in category order and including empty strata, with columns
        ``stratum``, ``n``, ``risk_min``, ``risk_max``, ``mean_risk`` (NaN when ``n`` is 0),
        ``expected_events`` (sum of risks), ``events_lower`` and ``events_upper`` (equal-tailed
        interval from `expected_events_interval`, assuming patients' outcomes are independent
        and their risks calibrated).

    Raises
    ------
    StratificationError
        If `frame` has no valid ``risk`` column, `strata` is misaligned or has missing values, or
        `level` is invalid.
    """
    level = _check_level(level)
    if RISK not in frame.columns:
        raise StratificationError(
            f"the patient table has no {RISK!r} column; score it before summarising strata."
        )
    values = _risk_values(frame[RISK])
    strata = _as_strata(strata, frame.index)
    codes = strata.cat.codes.to_numpy()
    rows = []
    for k, label in enumerate(strata.cat.categories):
        p = values[codes == k]
        expected, lower, upper = expected_events_interval(p, level)
        rows.append(
            {
                "n": len(p),
                "risk_min": float(p.min()) if len(p) else np.nan,
                "risk_max": float(p.max()) if len(p) else np.nan,
                "mean_risk": float(p.mean()) if len(p) else np.nan,
                "expected_events": expected,
                "events_lower": lower,
                "events_upper": upper,
                "stratum": label,
            }
        )
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    summary["stratum"] = pd.Categorical(summary["stratum"].tolist(), dtype=strata.dtype)
    summary = summary.astype(
        {
            "n": "int64",
            "risk_min": "float64",
            "risk_max": "float64",
            "mean_risk": "float64",
            "expected_events": "float64",
            "events_lower": "int64",
            "events_upper": "int64",
        }
    )
    return summary


# --- randomisation ------------------------------------------------------------------------------


def _stratum_rng(seed: int, label: object) -> np.random.Generator:
    # Python's hash() is salted per process; a digest keeps the stream reproducible across runs.
    digest = hashlib.sha256(str(label).encode("utf-8")).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


def _checked_arms(arms: Sequence[str]) -> list[str]:
    if isinstance(arms, str | bytes) or not isinstance(arms, Sequence | np.ndarray):
        raise StratificationError(
            f"arms must be a sequence of arm names, got {arms!r}; pass e.g. ['A', 'B']."
        )
    names = list(arms)
    if len(names) < 2:
        raise StratificationError(
            f"randomisation needs at least two arms, got {names}; pass e.g. ['A', 'B']."
        )
    if not all(isinstance(a, str) and a.strip() for a in names):
        raise StratificationError(
            f"arm names must be non-empty strings, got {names}; name each arm."
        )
    if len(set(names)) != len(names):
        raise StratificationError(
            f"arm names must be distinct, got {names}; remove the repeated names."
        )
    return names


def randomize(strata: pd.Series, arms: Sequence[str], *, block_size: int, seed: int) -> pd.Series:
    """Stratified permuted-block randomisation.

    Within each stratum, patients in input order receive arms from consecutive blocks; each
    block is a random permutation holding every arm ``block_size / len(arms)`` times. The last
    block of a stratum may be incomplete.

    Parameters
    ----------
    strata : pandas.Series
        Stratum of each patient (as from `assign_strata`), without missing values.
    arms : sequence of str
        Distinct arm names, at least two; allocation is equal.
    block_size : int
        Positive multiple of ``len(arms)``.
    seed : int
        Non-negative seed. Each stratum's sequence depends only on `seed` and the stratum's label
        (its string form), so it is reproducible, independent of other strata, and its first
        assignments do not change when patients are appended to the stratum.

    Returns
    -------
    pandas.Series
        Categorical named ``arm`` with categories `arms`, aligned with `strata`'s index.

    Raises
    ------
    StratificationError
        If the arms, block size or seed are invalid, or a patient has no stratum.
    """
    names = _checked_arms(arms)
    if not _is_int(block_size) or block_size <= 0 or block_size % len(names):
        raise StratificationError(
            f"block_size must be a positive multiple of the number of arms ({len(names)}), got "
            f"{block_size!r}; use e.g. {2 * len(names)}."
        )
    if not _is_int(seed) or seed < 0:
        raise StratificationError(
            f"seed must be a non-negative integer, got {seed!r}; pass e.g. 20240101."
        )
    strata = _as_strata(strata)
    codes = strata.cat.codes.to_numpy()
    block = np.repeat(np.arange(len(names)), block_size // len(names))
    assigned = np.full(len(codes), -1)
    for k, label in enumerate(strata.cat.categories):
        positions = np.flatnonzero(codes == k)
        if not len(positions):
            continue
        rng = _stratum_rng(int(seed), label)
        n_blocks = -(-len(positions) // block_size)
        sequence = np.concatenate([rng.permutation(block) for _ in range(n_blocks)])
        assigned[positions] = sequence[: len(positions)]
    return pd.Series(
        pd.Categorical.from_codes(assigned, categories=names),
        index=strata.index,
        name=ARM,
    )


# --- convenience --------------------------------------------------------------------------------


def stratify(
    frame: pd.DataFrame,
    *,
    n_strata: int | None = None,
    thresholds: Sequence[float] | None = None,
    arms: Sequence[str] | None = None,
    block_size: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Strata (and optionally arms) for a scored patient table, with a per-stratum summary.

    Parameters
    ----------
    frame : pandas.DataFrame
        Scored patients with at least a ``risk`` column; it is not modified.
    n_strata, thresholds
        As in `assign_strata`: exactly one must be given.
    arms : sequence of str, optional
        Arm names; when given, patients are randomised by `randomize` and `block_size` is
        required.
    block_size : int, optional
        Block size for `randomize`; only with `arms`.
    seed : int, default 0
        Seed for `randomize`.

    Returns
    -------
    patients : pandas.DataFrame
        `frame` with a ``stratum`` column and, when `arms` is given, an ``arm`` column.
    summary : pandas.DataFrame
        `stratum_summary` of the strata.

    Raises
    ------
    StratificationError
        If `frame` has no ``risk`` column or already has a ``stratum`` or ``arm`` column, if only
        one of `arms` and `block_size` is given, or as raised by the functions above.
    """
    if RISK not in frame.columns:
        raise StratificationError(
            f"the patient table has no {RISK!r} column; score it before stratifying."
        )
    taken = [c for c in (STRATUM, ARM) if c in frame.columns]
    if taken:
        # Silently replacing earlier assignments could re-randomise enrolled patients.
        raise StratificationError(
            f"the patient table already has column(s) {taken}; drop or rename them to "
            "stratify again."
        )
    if (arms is None) != (block_size is None):
        raise StratificationError(
            "randomisation needs both arms and block_size, got only "
            f"{'arms' if arms is not None else 'block_size'}; give both or neither."
        )
    strata = assign_strata(frame[RISK], n_strata=n_strata, thresholds=thresholds)
    patients = frame.copy()
    patients[STRATUM] = strata
    if arms is not None and block_size is not None:
        patients[ARM] = randomize(strata, arms, block_size=block_size, seed=seed)
    return patients, stratum_summary(frame, strata)
