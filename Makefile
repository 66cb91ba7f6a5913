# runtime-facts — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.8
PY ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV_LINK_MODE := copy
export RUNTIME_FACTS_HOME ?= $(CURDIR)/var

.PHONY: help setup demo distributed-demo test lint bench ci airflow clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-17s\033[0m %s\n", $$1, $$2}'

$(UV):
	@$(PY) -m pip install --quiet --user "uv==$(UV_VERSION)" || $(PY) -m pip install --quiet "uv==$(UV_VERSION)"

.venv/.synced: pyproject.toml uv.lock | $(UV)
	@"$$(command -v uv || echo $(UV))" sync --frozen --all-groups --all-extras
	@touch $@

setup: .venv/.synced ## Create the locked environment (.venv from uv.lock)

demo: setup ## Stage the bundled fixtures, run the ingest end to end, print what landed
	@.venv/bin/python -m runtime_facts.demo

# The demo's home: RUNTIME_FACTS_HOME when set in the environment (a folder or s3://...),
# else the moto S3 server; not this Makefile's ./var default.
DISTRIBUTED_HOME := $(if $(filter environment command,$(firstword $(origin RUNTIME_FACTS_HOME))),$(RUNTIME_FACTS_HOME),s3)

distributed-demo: setup ## Airflow on Celery (2 workers), Postgres, Redis, moto S3: ingest two tenants, check
	@bash scripts/distributed-deps.sh
	@RUNTIME_FACTS_HOME="$(DISTRIBUTED_HOME)" .venv/bin/python -m runtime_facts.distributed.demo

test: setup ## Run every test (slow ones included)
	@bash scripts/ensure-chromium.sh
	@bash scripts/run-tests.sh

lint: setup ## ruff + mypy --strict on the packages
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy

bench: setup ## Benchmarks, printed as ratios against a baseline measured in the same run
	@.venv/bin/runtime-facts bench

airflow: setup ## Start Airflow standalone on this repo's DAGs (UI :8080, state in airflow-home/)
	@.venv/bin/python -m runtime_facts.airflow_standalone

ci: lint test ## What CI runs, plus lint

clean: ## Remove local state (var/, airflow-home/) but not the environment
	rm -rf var airflow-home .pytest_cache
