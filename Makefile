# crsrisk: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := out/demo
DEMO_N ?= 10000
CRSRISK := $(abspath $(BIN))/crsrisk

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,spark]"
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install crsrisk with its pinned dependencies

demo: $(STAMP) ## Simulate, validate, train, score, stratify, evaluate externally, write the report
	mkdir -p $(DEMO)
	cd $(DEMO) && $(CRSRISK) simulate --n $(DEMO_N) --seed 1 --out cohort.csv --events events.csv
	cd $(DEMO) && $(CRSRISK) validate cohort.csv --events events.csv --rejected cohort.rejected.csv
	cd $(DEMO) && $(CRSRISK) train --data cohort.csv --events events.csv
	cd $(DEMO) && $(CRSRISK) models
	cd $(DEMO) && $(CRSRISK) simulate --n 5000 --seed 2 --out incoming.csv --events incoming_events.csv
	cd $(DEMO) && $(CRSRISK) score incoming.csv --out scores.csv --rejected scores.rejected.csv
	cd $(DEMO) && $(CRSRISK) stratify incoming.csv --out strata.csv --strata 3 --randomize A,B --block-size 4 --seed 7
	cd $(DEMO) && $(CRSRISK) evaluate --data incoming.csv --events incoming_events.csv --out external_metrics.json
	cd $(DEMO) && $(CRSRISK) report --data incoming.csv --out report.html
	@echo "demo outputs in $(DEMO)/: scores.csv, strata.csv, external_metrics.json, report.html"
	@echo "the model is registered in the tracking store named on the first line of each command"
	@echo "(MLFLOW_TRACKING_URI, else ~/.crsrisk/mlflow.db): crsrisk models works from any folder"

test: $(STAMP) ## Run the test suite (warnings are errors); installs headless Chromium if missing
	bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## The tests that train no model (pytest -m "not slow"), about two minutes
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP) ## ruff
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/python scripts/check_imports.py

bench: $(STAMP) ## Benchmarks (print ratios against a reference in the same run)
	$(BIN)/python bench/simulation_check.py --n 100000 --seed 1
	$(BIN)/python bench/validation.py --n 1000000
	$(BIN)/python bench/metrics.py --n 5000 --n-boot 1000
	$(BIN)/python bench/train.py --n 10000
	$(BIN)/python bench/model_quality.py --n-train 10000 --n-test 5000
	$(BIN)/python bench/model_quality.py --n-train 400 --n-test 5000
	$(BIN)/python bench/explain.py --n 20000
	$(BIN)/python bench/scoring.py --n 1000000
	$(BIN)/python bench/spark_equality.py --n 100000
	$(BIN)/python bench/spark_scoring.py --n 2000000
	@echo "REST latency needs a registered model (run make demo first):"
	$(BIN)/python bench/rest_latency.py --n 300

clean: ## Remove generated outputs (not the venv, not the tracking store in ~/.crsrisk)
	rm -rf out mlruns mlartifacts mlflow.db .pytest_cache

.PHONY: help venv demo test test-fast lint bench clean
