"""The product table of the data contract (shared/data-contract.md, section 4)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "Product",
    "PRODUCTS",
    "THERAPY_CLASSES",
    "DIAGNOSES",
    "COSTIM_DOMAINS",
    "LYMPHODEPLETION",
    "SEXES",
    "GRADING_SCALES",
    "HYPOTENSION_LEVELS",
    "HYPOXIA_LEVELS",
]


class Product(NamedTuple):
    therapy_class: str
    costim_domain: str | None  # None: not a CAR-T, or given per row (other_car_t)
    usual_diagnoses: tuple[str, ...]  # empty: any


PRODUCTS: dict[str, Product] = {
    "axi-cel": Product("CAR-T", "CD28", ("LBCL", "FL")),
    "brexu-cel": Product("CAR-T", "CD28", ("MCL", "B-ALL")),
    "tisa-cel": Product("CAR-T", "4-1BB", ("LBCL", "B-ALL", "FL")),
    "liso-cel": Product("CAR-T", "4-1BB", ("LBCL", "CLL", "FL", "MCL")),
    "obe-cel": Product("CAR-T", "4-1BB", ("B-ALL",)),
    "ide-cel": Product("CAR-T", "4-1BB", ("MM",)),
    "cilta-cel": Product("CAR-T", "4-1BB", ("MM",)),
    "other_car_t": Product("CAR-T", None, ()),
    "blinatumomab": Product("bispecific", None, ("B-ALL",)),
    "teclistamab": Product("bispecific", None, ("MM",)),
    "talquetamab": Product("bispecific", None, ("MM",)),
    "elranatamab": Product("bispecific", None, ("MM",)),
    "glofitamab": Product("bispecific", None, ("LBCL",)),
    "epcoritamab": Product("bispecific", None, ("LBCL", "FL")),
    "mosunetuzumab": Product("bispecific", None, ("FL",)),
    "tarlatamab": Product("bispecific", None, ("SCLC",)),
    "other_bispecific": Product("bispecific", None, ()),
}

THERAPY_CLASSES = ("CAR-T", "bispecific")
DIAGNOSES = ("LBCL", "FL", "MCL", "B-ALL", "CLL", "MM", "SCLC", "other")
COSTIM_DOMAINS = ("CD28", "4-1BB")
LYMPHODEPLETION = ("flu_cy", "bendamustine", "other", "none")
SEXES = ("F", "M")
GRADING_SCALES = ("ASTCT", "Lee2014", "Penn", "CTCAE_v4", "CTCAE_v5")
HYPOTENSION_LEVELS = ("none", "no_vasopressor", "one_vasopressor", "multiple_vasopressors")
HYPOXIA_LEVELS = ("none", "low_flow", "high_flow", "positive_pressure")
