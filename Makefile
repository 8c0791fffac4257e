# One command each: `make demo` sets everything up and runs the demo;
# `make test` sets everything up and runs the whole test suite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint check clean docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/offload demo

# Three test processes (pytest-xdist): most tests wait on servers, so two cores run three at a time;
# each file's tests stay on one process, so a module's servers start once.
TEST_PROCESSES ?= 3

test: setup
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests offload_bench
	$(BIN)/ruff format --check src tests offload_bench
	$(BIN)/mypy --strict src/offload

check: lint test

# The docs site (mkdocs-material, the reference from the docstrings), warnings as errors.
docs: setup
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist site src/*.egg-info

# The sdist and the wheel, checked as PyPI would check them (CI also installs the wheel: .ci/run).
.PHONY: package
package: setup
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# The chaos harness (docs/RELIABILITY.md); its needs are in the setup's extras.
# CHAOS_ARGS="--mode long" for a release check, "--backend sqlite" for one backend.
.PHONY: chaos
chaos: setup
	$(BIN)/python -m offload_bench.chaos $(CHAOS_ARGS)

# The benchmark suite (docs/PERFORMANCE.md): BENCH_ARGS="--quick" for a few minutes,
# "--only hit" for one scenario. It needs wrk and the peers of the bench extra.
.PHONY: bench
bench: setup
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m offload_bench.bench $(BENCH_ARGS)

# The worker engines (docs/PERFORMANCE.md): many async jobs in one process, and
# trivial-job throughput against Celery, rq and procrastinate. ENGINE_ARGS="--quick".
.PHONY: bench-engine
bench-engine: setup
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m offload_bench.engine $(ENGINE_ARGS)

# The HTTP caching conformance harness (offload_bench/conformance.py): the public test
# suite of github.com/http-tests/cache-tests run against the proxy, not part of `make test`.
# It needs Node.js and npm, and the suite checked out in CACHE_TESTS_DIR.
# CONFORMANCE_ARGS="--no-cache" for the pass-through baseline, "--id TEST" for one test.
.PHONY: conformance conformance-suite
conformance-suite:
	@test -n "$(CACHE_TESTS_DIR)" || { echo "make conformance: CACHE_TESTS_DIR is not set; fetch the suite with: git clone https://github.com/http-tests/cache-tests /tmp/cache-tests && (cd /tmp/cache-tests && npm install), then run: make conformance CACHE_TESTS_DIR=/tmp/cache-tests" >&2; exit 2; }

conformance: conformance-suite setup
	CACHE_TESTS_DIR="$(CACHE_TESTS_DIR)" $(BIN)/python -m offload_bench.conformance $(CONFORMANCE_ARGS)
