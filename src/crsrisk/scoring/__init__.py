"""Scoring: a frame (core), streamed files (batch), and Apache Spark (same core, same checks)."""
