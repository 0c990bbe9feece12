"""Candidates, calibration, the fitted RiskModel and the training procedure."""
