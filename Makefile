# One command each: `make demo` sets everything up and runs the demo;
# `make test` sets everything up and runs the whole test suite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/offload demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests offload_bench
	$(BIN)/ruff format --check src tests offload_bench
	$(BIN)/mypy --strict src/offload

check: lint test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist src/*.egg-info

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
