# The two commands of the README: `make demo` (the main job, end to end, on the embedded stack)
# and `make test` (lint, types, the whole test suite on real components). Both start from a
# fresh clone: they create the virtualenv and install the pinned Python and npm dependencies.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: venv demo test lint typecheck unit integration bench up down status clean

venv: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: venv
	$(BIN)/trace demo

test: venv lint typecheck
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit

integration: venv
	$(BIN)/pytest tests/integration tests/e2e

bench: venv
	$(BIN)/python bench/realtime.py

up: venv
	$(BIN)/trace up

down: venv
	$(BIN)/trace down

status: venv
	$(BIN)/trace status

clean:
	-$(BIN)/trace down
	rm -rf .trace
