# Two entry points: `make serve` (demo broker) and `make test` (the whole suite). Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: promtool serve test lint typecheck unit bench bench-compare bench-latency bench-large clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

$(STAMP_BENCH): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@ $(STAMP_DEV) $(STAMP_RUN)

serve: $(STAMP_RUN)
	MESH_DEMO=on MESH_DATA_DIR=./.mesh-data $(BIN)/mesh-broker serve --host 127.0.0.1 --port 8700

lint: $(STAMP_DEV)
	$(BIN)/ruff check broker tests benchmarks
	$(BIN)/ruff format --check broker tests benchmarks

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

# promtool (Debian's prometheus package) checks the alert rules in tests/ops; installed when missing.
promtool:
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

test: lint typecheck promtool
	$(BIN)/python -m pytest -q

# Locust load test (benchmarks/load.py); extra flags through BENCH_ARGS, e.g. make bench BENCH_ARGS='--users 8'.
bench: $(STAMP_BENCH)
	PYTHONPATH=. $(BIN)/python benchmarks/load.py $(BENCH_ARGS)

bench-compare: $(STAMP_BENCH)
	PYTHONPATH=. $(BIN)/python benchmarks/load.py --compare-sandbox $(BENCH_ARGS)

bench-latency: $(STAMP_DEV)
	PYTHONPATH=. $(BIN)/python benchmarks/latency.py --backend both

bench-large: $(STAMP_DEV)
	PYTHONPATH=. $(BIN)/python benchmarks/large_transfer.py

clean:
	rm -rf $(VENV) .mesh-data .pytest_cache .mypy_cache .ruff_cache
