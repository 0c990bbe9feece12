"""SHAP explanations: per-patient drivers and cohort-wide importance."""
