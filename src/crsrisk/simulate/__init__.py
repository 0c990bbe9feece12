"""Literature-grounded simulated cohorts."""
