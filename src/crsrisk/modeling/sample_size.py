"""Minimum sample size for developing a prediction model of a binary outcome (Riley et al.).

Riley et al. (BMJ 2020; Stat Med 2019) give three criteria for the minimum number of patients
needed to develop a logistic prediction model with ``p`` candidate parameters:

1. expected uniform shrinkage of the coefficients at least 0.9 (little overfitting);
2. the optimism in Nagelkerke R^2 at most 0.05;
3. the overall risk (the intercept) estimated within +-0.05 of the true value.

The anticipated model performance enters as the Cox-Snell R^2, which is rarely reported; it is
derived here from an anticipated C statistic (AUROC) and the outcome prevalence with the
approximation of Riley et al. (Stat Med 2022) that pmsampsize uses: the linear predictor is
normal with unit variance in non-events and events, its means ``sqrt(2) * Phi^-1(C)`` apart. The
large-sample R^2 of that calibration model is computed here by Gauss-Hermite quadrature rather
than by simulating a million patients, so it is exact and needs no seed.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

__all__ = [
    "SHRINKAGE_TARGET",
    "R2_OPTIMISM_TARGET",
    "RISK_MARGIN",
    "max_cox_snell_r2",
    "cox_snell_r2_from_c",
    "SampleSize",
    "minimum_sample_size",
]

SHRINKAGE_TARGET = 0.9  # criterion 1
R2_OPTIMISM_TARGET = 0.05  # criterion 2: absolute optimism in Nagelkerke R^2
RISK_MARGIN = 0.05  # criterion 3: overall risk within +-0.05 (95% confidence)
_QUADRATURE_POINTS = 160
_Z95 = 1.96  # as published (and as pmsampsize computes criterion 3)


def max_cox_snell_r2(prevalence: float) -> float:
    """The largest Cox-Snell R^2 a model can reach at this outcome prevalence."""
    p = prevalence
    return float(1.0 - (p**p * (1.0 - p) ** (1.0 - p)) ** 2)


# Solved numerically (about 10 ms) and asked for every parameter count in every search fold
# of the parsimonious candidate with the same two numbers: remember the answers.
@functools.lru_cache(maxsize=1024)
def cox_snell_r2_from_c(c_statistic: float, prevalence: float) -> float:
    """Anticipated Cox-Snell R^2 of a model with this C statistic at this prevalence.

    Parameters
    ----------
    c_statistic
        Anticipated AUROC, in (0.5, 1).
    prevalence
        Outcome proportion, in (0, 1).

    Returns
    -------
    float
        The population Cox-Snell R^2 (Riley et al. 2022 approximation).
    """
    if not 0.5 < c_statistic < 1.0:
        raise ValueError(f"the anticipated C statistic must lie in (0.5, 1), got {c_statistic}")
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"the prevalence must lie in (0, 1), got {prevalence}")
    mu = np.sqrt(2.0) * stats.norm.ppf(c_statistic)
    nodes, weights = np.polynomial.hermite_e.hermegauss(_QUADRATURE_POINTS)
    weights = weights / weights.sum()

    def mean_negative_loglik(beta: np.ndarray) -> float:
        a, b = beta
        non_event = -np.logaddexp(0.0, a + b * nodes)
        event = -np.logaddexp(0.0, -(a + b * (nodes + mu)))
        return -((1 - prevalence) * weights @ non_event + prevalence * weights @ event)

    fit = optimize.minimize(mean_negative_loglik, x0=[0.0, 1.0], method="BFGS",
                            options={"gtol": 1e-12})
    null = prevalence * np.log(prevalence) + (1 - prevalence) * np.log(1 - prevalence)
    return float(1.0 - np.exp(2.0 * (null + fit.fun)))


def _n_for_shrinkage(parameters: int, r2: float, shrinkage: float) -> int:
    return int(np.ceil(parameters / ((shrinkage - 1.0) * np.log(1.0 - r2 / shrinkage))))


@dataclass(frozen=True)
class SampleSize:
    """The minimum sample size for one model, per criterion, against the cohort at hand.

    ``minimum_n`` is the largest of the three criteria; ``parameter_n`` the largest of the two
    that depend on the number of parameters (criteria 1 and 2). Criterion 3 only concerns the
    intercept, the same for every model on the cohort, so it is reported, not used to decide
    between models.
    """

    parameters: int
    prevalence: float
    c_statistic: float
    cox_snell_r2: float
    n_shrinkage: int
    n_optimism: int
    n_risk: int
    available_n: int | None = None

    @property
    def minimum_n(self) -> int:
        return max(self.n_shrinkage, self.n_optimism, self.n_risk)

    @property
    def parameter_n(self) -> int:
        return max(self.n_shrinkage, self.n_optimism)

    @property
    def minimum_events(self) -> int:
        return int(round(self.minimum_n * self.prevalence))

    @property
    def events_per_parameter(self) -> float:
        return self.minimum_n * self.prevalence / self.parameters

    @property
    def supported(self) -> bool:
        """The cohort meets criteria 1 and 2 (see the class notes for criterion 3)."""
        return self.available_n is not None and self.available_n >= self.parameter_n

    def as_dict(self) -> dict[str, float | int | bool | None]:
        out = asdict(self)
        out.update(minimum_n=self.minimum_n, minimum_events=self.minimum_events,
                   parameter_n=self.parameter_n, supported=self.supported)
        return out


def minimum_sample_size(
    parameters: int,
    prevalence: float,
    c_statistic: float | None = None,
    available_n: int | None = None,
    cox_snell_r2: float | None = None,
) -> SampleSize:
    """Riley et al.'s minimum sample size for a binary-outcome model with ``parameters``.

    Parameters
    ----------
    parameters
        Candidate predictor parameters (degrees of freedom, not variables), at least 1.
    prevalence
        Anticipated outcome proportion, e.g. the cohort's.
    c_statistic
        Anticipated AUROC of the model (converted to the Cox-Snell R^2).
    available_n
        The cohort's size, to say whether it meets the criteria.
    cox_snell_r2
        The anticipated Cox-Snell R^2 directly, instead of ``c_statistic``.

    Returns
    -------
    SampleSize
        Each criterion's minimum and the cohort's standing.
    """
    if parameters < 1:
        raise ValueError(f"a model has at least one parameter, got {parameters}")
    if (c_statistic is None) == (cox_snell_r2 is None):
        raise ValueError("give exactly one of c_statistic and cox_snell_r2")
    if c_statistic is not None:
        r2 = cox_snell_r2_from_c(c_statistic, prevalence)
    else:
        r2 = float(cox_snell_r2)  # type: ignore[arg-type]
        top = max_cox_snell_r2(prevalence)
        if not 0.0 < r2 < top:
            raise ValueError(f"the Cox-Snell R^2 must lie in (0, {top:.3f}) at prevalence "
                             f"{prevalence}, got {r2}")
    # Criterion 2: the shrinkage that keeps the optimism in Nagelkerke R^2 at the target.
    shrinkage_optimism = r2 / (r2 + R2_OPTIMISM_TARGET * max_cox_snell_r2(prevalence))
    n_risk = int(np.ceil((_Z95 / RISK_MARGIN) ** 2 * prevalence * (1 - prevalence)))
    return SampleSize(
        parameters=int(parameters),
        prevalence=float(prevalence),
        c_statistic=float("nan") if c_statistic is None else float(c_statistic),
        cox_snell_r2=r2,
        n_shrinkage=_n_for_shrinkage(parameters, r2, SHRINKAGE_TARGET),
        n_optimism=_n_for_shrinkage(parameters, r2, shrinkage_optimism),
        n_risk=n_risk,
        available_n=available_n,
    )
