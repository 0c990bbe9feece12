"""The product table of the data contract: each product's therapy class, costimulatory domain,
usual diagnoses and brand names."""

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
    brands: tuple[str, ...] = ()  # trade names, as site exports often write the product


PRODUCTS: dict[str, Product] = {
    "axi-cel": Product("CAR-T", "CD28", ("LBCL", "FL"), ("Yescarta",)),
    "brexu-cel": Product("CAR-T", "CD28", ("MCL", "B-ALL"), ("Tecartus",)),
    "tisa-cel": Product("CAR-T", "4-1BB", ("LBCL", "B-ALL", "FL"), ("Kymriah",)),
    "liso-cel": Product("CAR-T", "4-1BB", ("LBCL", "CLL", "FL", "MCL"), ("Breyanzi",)),
    "obe-cel": Product("CAR-T", "4-1BB", ("B-ALL",), ("Aucatzyl",)),
    "ide-cel": Product("CAR-T", "4-1BB", ("MM",), ("Abecma",)),
    "cilta-cel": Product("CAR-T", "4-1BB", ("MM",), ("Carvykti",)),
    "other_car_t": Product("CAR-T", None, ()),
    "blinatumomab": Product("bispecific", None, ("B-ALL",), ("Blincyto",)),
    "teclistamab": Product("bispecific", None, ("MM",), ("Tecvayli",)),
    "talquetamab": Product("bispecific", None, ("MM",), ("Talvey",)),
    "elranatamab": Product("bispecific", None, ("MM",), ("Elrexfio",)),
    "glofitamab": Product("bispecific", None, ("LBCL",), ("Columvi",)),
    "epcoritamab": Product("bispecific", None, ("LBCL", "FL"), ("Epkinly", "Tepkinly")),
    "mosunetuzumab": Product("bispecific", None, ("FL",), ("Lunsumio",)),
    "tarlatamab": Product("bispecific", None, ("SCLC",), ("Imdelltra",)),
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
