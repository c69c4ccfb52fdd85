# `make demo` and `make test` set everything up on a fresh machine (Python >= 3.11 with venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The OCPP interop tests drive a Node charger (tests/interop, ocpp-rpc); node_modules is never committed.
INTEROP_STAMP := tests/interop/node_modules/.installed

.PHONY: demo compare test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(INTEROP_STAMP): tests/interop/package.json tests/interop/package-lock.json
	npm ci --prefix tests/interop --no-audit --no-fund
	touch $(INTEROP_STAMP)

# The daemon and its dashboard against a virtual home on a sample day, in simulated time; ends by itself.
demo: $(STAMP)
	$(BIN)/v2x demo --days 1 --speed 300

# Three weeks of a real home (public data) under four strategies, with the project's real planner.
compare: $(STAMP)
	$(BIN)/v2x sim compare --config sim/examples/home.yaml --series sim/examples/series.csv --trips sim/examples/trips.csv

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m tests.code_size

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(INTEROP_STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis tests/interop/node_modules
