"""The data contract: column specs, products, validation, site mappings, grading."""
