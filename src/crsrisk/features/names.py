"""Feature names for clinicians: the label, unit and contract column of each model feature.

`feature_label` and `raw_value_column` translate `FeatureBuilder` output columns (and published
score names) for the drivers in words; `feature_group` puts all columns born of one input into
one driver.
"""

from __future__ import annotations

import re

from crsrisk.contract.spec import BASELINE_COLUMNS
from crsrisk.features.derive import LOG_LABS

__all__ = ["feature_group", "feature_label", "raw_value_column"]

# Label and unit of each contract column a feature can come from: the contract's.
_COLUMN_LABELS: dict[str, str] = {c.name: c.heading for c in BASELINE_COLUMNS if c.label}
# Derived features: their contract column (None: no single raw value) and label. Labels never
# contain ";", which separates drivers in the score table.
_DERIVED: dict[str, tuple[str | None, str]] = {
    **{name: (column, _COLUMN_LABELS[column]) for name, (column, _) in LOG_LABS.items()},
    "flu_cy": ("lymphodepletion", "Fludarabine/cyclophosphamide lymphodepletion"),
    "costim": ("costim_domain", "Costimulation (CD28, 4-1BB, or none for bispecifics)"),
    "tumour_burden": (
        None,
        "Tumour burden (SPD, marrow blasts or plasma cells, in SDs from the disease mean)",
    ),
    "log2_m_easix": (None, "m-EASIX (LDH x CRP / platelets)"),
    "log2_easix": (None, "EASIX (LDH x creatinine / platelets)"),
    "m_easix": (None, "m-EASIX (LDH x CRP / platelets)"),
    "easix": (None, "EASIX (LDH x creatinine / platelets)"),
    "car_hematotox": (None, "CAR-HEMATOTOX (points)"),
}
_SPLINE = re.compile(r"^(?P<base>.+)_spline_(?P<k>\d+)$")


def _split(name: str) -> tuple[str, str]:
    """(base feature, decoration kind) of an output column name."""
    if "=" in name:
        return name.split("=", 1)[0], "level"
    if name.endswith("_missing"):
        return name[: -len("_missing")], "missing"
    match = _SPLINE.match(name)
    if match:
        return match["base"], "spline"
    return name, ""


def raw_value_column(name: str) -> str | None:
    """The contract column whose raw value a clinician should see for feature ``name``.

    Parameters
    ----------
    name
        A `FeatureBuilder` output column (``log_crp``, ``product=axi-cel``, ``log_crp_missing``,
        ``age_years_spline_2``, ...) or a published score name.

    Returns
    -------
    str or None
        E.g. ``"crp_mg_l"`` for ``log_crp``; None for features with no single raw value
        (m-EASIX, EASIX, tumour burden, published scores) and for unknown names.
    """
    base, _ = _split(name)
    if base in _DERIVED:
        return _DERIVED[base][0]
    if base in _COLUMN_LABELS:
        return base
    return None


def feature_group(name: str) -> str:
    """The driver group of feature ``name``: its contract column, else its undecorated name.

    All output columns born of one input share a group (``log_crp``, ``log_crp_missing`` and
    ``log_crp_spline_1`` -> ``crp_mg_l``; ``tumour_burden_missing`` -> ``tumour_burden``), so
    their contributions can be summed into one driver.
    """
    return raw_value_column(name) or _split(name)[0]


def feature_label(name: str) -> str:
    """A clinician-readable label with unit for feature ``name``.

    Parameters
    ----------
    name
        A `FeatureBuilder` output column, a contract column or a published score name.

    Returns
    -------
    str
        E.g. ``"CRP (mg/L)"`` for ``log_crp``, ``"Product: axi-cel"`` for ``product=axi-cel``,
        ``"CRP (mg/L) missing"`` for ``log_crp_missing``; an unknown name is returned as is.
    """
    base, decoration = _split(name)
    if base in _DERIVED:
        label = _DERIVED[base][1]
    elif base in _COLUMN_LABELS:
        label = _COLUMN_LABELS[base]
    else:
        return name
    if decoration == "level":
        return f"{label}: {name.split('=', 1)[1]}"
    if decoration == "missing":
        return f"{label} missing"
    if decoration == "spline":
        return f"{label} (spline term {_SPLINE.match(name)['k']})"
    return label
