# Every target creates the virtualenv and installs what it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck bench reliability emulators serve webhook clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

## The whole pipeline on the embedded defaults (SQLite, local Prefect server, emulators).
demo: $(STAMP)
	$(BIN)/tam demo $(ARGS)

## Lint, type-check and the whole test suite (starts its own Postgres and Prefect server).
test: $(STAMP)
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-deno.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	bash scripts/ensure-postgres.sh
	$(BIN)/tam bench $(ARGS)

reliability: $(STAMP)
	bash scripts/ensure-postgres.sh
	TAM_RELIABILITY_FULL=1 $(BIN)/pytest -m reliability $(PYTEST_ARGS)

emulators: $(STAMP)
	$(BIN)/tam emulators $(ARGS)

serve: $(STAMP)
	$(BIN)/tam serve $(ARGS)

webhook: $(STAMP)
	$(BIN)/tam webhook $(ARGS)

clean:
	rm -rf $(VENV) .tam .pytest_cache .mypy_cache .ruff_cache
