"""Metrics (one implementation), internal and external validation, recalibration."""
