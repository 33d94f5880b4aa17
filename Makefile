# Two entry points: `make serve` (demo broker) and `make test` (the whole suite). Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: postgres promtool serve test lint typecheck unit bench bench-compare bench-latency bench-large clean

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

# PostgreSQL's server programs for the suite's throwaway clusters (broker/devsupport/pg_server.py finds them on
# PATH or under /usr/lib/postgresql); Debian's postgresql package is installed when neither has them.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

test: lint typecheck promtool postgres
	$(BIN)/python -m pytest -q

# Fast tier: ruff, mypy and tests/unit only; needs no PostgreSQL, moto or promtool.
unit: lint typecheck
	$(BIN)/python -m pytest -q tests/unit

# Locust load test (benchmarks/load.py); extra flags through BENCH_ARGS, e.g. make bench BENCH_ARGS='--users 8'.
bench: $(STAMP_BENCH)
	$(BIN)/python benchmarks/load.py $(BENCH_ARGS)

bench-compare: $(STAMP_BENCH)
	$(BIN)/python benchmarks/load.py --compare-sandbox $(BENCH_ARGS)

bench-latency: $(STAMP_DEV)
	$(BIN)/python benchmarks/latency.py --backend both

bench-large: $(STAMP_DEV)
	$(BIN)/python benchmarks/large_transfer.py

clean:
	rm -rf $(VENV) .mesh-data .pytest_cache .mypy_cache .ruff_cache
