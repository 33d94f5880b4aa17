# Two entry points: `make serve` (demo broker) and `make test` (the whole suite). Each builds .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: postgres promtool haproxy chromium axe js-client lock k8s-rules cluster cluster-down serve test lint typecheck unit bench bench-compare bench-latency bench-large bench-stalled bench-nodes faults soak clean

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

# HAProxy (Debian's package): `haproxy -c` checks deploy/haproxy/haproxy.cfg in tests/ops, and `make cluster` balances
# its nodes with it; installed when missing.
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null; }

# The image's pinned installs (deploy/Dockerfile): runtime dependencies with the postgres and s3 extras, and the
# build backend, each with hashes. Run after changing dependencies in pyproject.toml (tests/ops checks they agree).
lock: $(STAMP_DEV)
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra postgres --extra s3 --output-file deploy/requirements.lock pyproject.toml
	cd deploy && ../$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links \
		--output-file build-requirements.lock build-requirements.in

# The Kubernetes copy of the alert rules (deploy/k8s/base/prometheusrule.yaml) from grafana/alerts: run after changing
# the rules (tests/ops checks they agree).
k8s-rules: $(STAMP_DEV)
	$(BIN)/python -m broker.devsupport.alert_rules

# The compose topology as local processes on 127.0.0.1 (broker/devsupport/cluster.py): PostgreSQL, moto's S3, broker
# nodes, HAProxy and Prometheus, state under .cluster/; prints the URLs. CLUSTER_ARGS='--nodes 3'.
cluster: $(STAMP_DEV) postgres haproxy promtool
	$(BIN)/python -m broker.devsupport.cluster up $(CLUSTER_ARGS)

cluster-down: $(STAMP_DEV)
	$(BIN)/python -m broker.devsupport.cluster down

# PostgreSQL's server programs for the suite's throwaway clusters (broker/devsupport/pg_server.py finds them on
# PATH or under /usr/lib/postgresql); Debian's postgresql package is installed when neither has them.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

# Debian's Chromium, which tests/ui drives through Playwright (no browser is downloaded); installed when missing.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# axe-core from npm, pinned, for the accessibility check tests/ui injects into every page; in .cache/ (not committed).
AXE_VERSION := 4.14.1
axe:
	@test -f .cache/axe/node_modules/axe-core/axe.min.js && grep -q '"version": "$(AXE_VERSION)"' \
		.cache/axe/node_modules/axe-core/package.json || npm install --silent --no-save --prefix .cache/axe \
		axe-core@$(AXE_VERSION) >/dev/null

# NHS's JavaScript MESH client (npm nhs-mesh-client), pinned with its dependencies by tests/compat/js's lock file,
# for tests/compat/test_js_client.py; in .cache/ (not committed), installed again when the lock file changes.
JS_CLIENT := .cache/js-client
js-client:
	@cmp -s tests/compat/js/package-lock.json $(JS_CLIENT)/package-lock.json \
		&& test -f $(JS_CLIENT)/node_modules/nhs-mesh-client/index.js || { mkdir -p $(JS_CLIENT) \
		&& cp tests/compat/js/package.json tests/compat/js/package-lock.json $(JS_CLIENT)/ \
		&& npm ci --silent --no-audit --no-fund --prefix $(JS_CLIENT) >/dev/null; }

# Three workers, a test file each at a time (module fixtures such as the browser stay in one process): most tests
# wait on the brokers, databases and browsers they start, so three overlap well even on two cores
# (measured on the shared 2-core machine: 1 worker about 900 s, 3 workers 593-622 s, 4 workers 642 s).
test: lint typecheck promtool postgres haproxy chromium axe js-client
	$(BIN)/python -m pytest -q -n 3 --dist loadfile

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

# benchmarks/stalled.py: 1,000 stalled connections held while send -> download -> acknowledge cycles run; p50/p99,
# the broker's peak RSS and its RSS after they close. BENCH_ARGS='--stalled 2000 --cycles 500'.
bench-stalled: $(STAMP_BENCH)
	$(BIN)/python benchmarks/stalled.py $(BENCH_ARGS)

# benchmarks/nodes.py (issue 18): the Locust load through HAProxy on 1, 2 and 4 nodes sharing one PostgreSQL and moto's
# S3; cycles/s, CPU per cycle of every part, PostgreSQL round trips per cycle, and docs/capacity.md's plan from them.
# On a many-core machine: BENCH_ARGS='--nodes 1,2,4,8 --duration 60 --out /tmp/nodes'.
bench-nodes: $(STAMP_BENCH) postgres haproxy
	$(BIN)/python benchmarks/nodes.py $(BENCH_ARGS)

# The fault tier alone (tests/faults: SIGKILL mid-request, PostgreSQL stopped, S3 through a fault proxy, a full
# disk); `make test` runs it too.
faults: $(STAMP_DEV) postgres
	$(BIN)/python -m pytest -q -m faults tests/faults

# benchmarks/soak.py: 10 minutes of normal and hostile load on a real broker, RSS, open files, p99 and 5xx per
# minute, nothing lost; not part of `make test`. SOAK_ARGS='--backend postgres+s3 --duration 120'.
soak: $(STAMP_BENCH) postgres
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mesh-data .cluster .pytest_cache .mypy_cache .ruff_cache
