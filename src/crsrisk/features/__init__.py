"""From validated contract rows to a model matrix: published scores and the FeatureBuilder."""
