# crsrisk: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT := out
DEMO_N ?= 10000

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install crsrisk with its pinned dependencies

demo: $(STAMP) ## Simulate a cohort, validate it (later: train, score, report)
	mkdir -p $(OUT)
	$(BIN)/crsrisk simulate --n $(DEMO_N) --seed 1 --out $(OUT)/cohort.csv --events $(OUT)/events.csv
	$(BIN)/crsrisk validate $(OUT)/cohort.csv --events $(OUT)/events.csv --rejected $(OUT)/cohort.rejected.csv

test: $(STAMP) ## Run the test suite (warnings are errors)
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(STAMP) ## Benchmarks (print ratios against a reference in the same run)
	$(BIN)/python bench/simulation_check.py --n 100000 --seed 1
	$(BIN)/python bench/validation.py --n 1000000

clean: ## Remove generated outputs (not the venv)
	rm -rf $(OUT) mlruns mlartifacts mlflow.db .pytest_cache

.PHONY: help venv demo test lint bench clean
