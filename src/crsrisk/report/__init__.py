"""The self-contained HTML model report."""
