# runtime-facts — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.8
PY ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV_LINK_MODE := copy
export RUNTIME_FACTS_HOME ?= $(CURDIR)/var
AIRFLOW_HOME ?= $(CURDIR)/airflow-home
ARGS ?= --help

.PHONY: help setup demo distributed-demo test lint bench ci airflow run clean

help: ## Show this help (colours only on a terminal, and not with NO_COLOR)
	@if [ -t 1 ] && [ -z "$${NO_COLOR:-}" ]; then on='\033[36m'; off='\033[0m'; else on=; off=; fi; \
	grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*?## "}; {printf "  %s%-17s%s %s\n", on, $$1, off, $$2}'

# uv is bootstrapped only when the environment has to be (re)built, so targets run from a shell
# without uv once .venv is in sync.
.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null || test -x "$(UV)" || $(PY) -m pip install --quiet --user "uv==$(UV_VERSION)" || $(PY) -m pip install --quiet "uv==$(UV_VERSION)"
	@"$$(command -v uv || echo $(UV))" sync --frozen --all-groups --all-extras --compile-bytecode
	@touch $@

$(AIRFLOW_HOME)/airflow.cfg: .venv/.synced
	@AIRFLOW_HOME="$(AIRFLOW_HOME)" .venv/bin/python -m runtime_facts.airflow_home

# The native kernels (validation; LtHash with the vendored BLAKE3), built from source with the
# system C compiler (transforms/kernel).
KERNEL_SOURCES := $(wildcard transforms/kernel/*.c transforms/kernel/*.h transforms/kernel/blake3/*.[ch]) transforms/kernel/build.py
transforms/kernel/_events.so transforms/kernel/_lthash.so &: $(KERNEL_SOURCES) .venv/.synced
	@.venv/bin/python -m transforms.kernel.build >/dev/null

# Bytecode is compiled ahead (the dependencies by uv, the project here): with
# PYTHONDONTWRITEBYTECODE set, as in many containers, every command would otherwise compile
# ~400 modules from source again (~1 s of each CLI start).
setup: .venv/.synced $(AIRFLOW_HOME)/airflow.cfg transforms/kernel/_events.so transforms/kernel/_lthash.so ## Create the locked environment (.venv from uv.lock), airflow-home/ and the native kernel
	@.venv/bin/python -m compileall -q -j0 runtime_facts transforms dags >/dev/null

demo: setup ## Stage the bundled fixtures, run the ingest end to end, print what landed
	@AIRFLOW_HOME="$(AIRFLOW_HOME)" .venv/bin/python -m runtime_facts.demo

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

airflow: setup ## Start Airflow on this repo's DAGs (UI localhost:8080, state in airflow-home/)
	@AIRFLOW_HOME="$(AIRFLOW_HOME)" exec .venv/bin/python -m runtime_facts.airflow_standalone

run: .venv/.synced ## Run the CLI without activating .venv: make run ARGS='facts list --tenant acme ...'
	@echo "runtime-facts home: $$RUNTIME_FACTS_HOME" >&2
	@.venv/bin/runtime-facts $(ARGS)

ci: lint test ## What CI runs, plus lint

clean: ## Remove local state (var/, airflow-home/, test and tool caches) but not .venv
	rm -rf var airflow-home test-artifacts .cache .hypothesis .pytest_cache .mypy_cache .ruff_cache
