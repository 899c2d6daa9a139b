# `make run` and `make test` set everything up from scratch (Python >= 3.10 with pip and venv) and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-notebooks test-slow test-all lint format docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev,docs]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dlnjax reproduce lindsey-menon

test: $(STAMP)
	$(BIN)/python -m pytest -q

# every notebook in notebooks/ executed in a fresh kernel (~5 min on 2 cores; .ci/run runs it after the suite)
test-notebooks: $(STAMP)
	$(BIN)/python -m pytest -q -m notebook --dist load tests/test_notebooks.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# the tests marked slow: the costliest variants and the long Monte Carlo checks (.ci/run runs them)
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow and not gpu"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

bench: $(STAMP)
	$(BIN)/python benchmarks/fiber_gradient.py
	$(BIN)/python benchmarks/sweep_vs_loop.py
	$(BIN)/python benchmarks/train_throughput.py --quick  # ~75 s; the full run (all batch sizes) ~15 min
	$(BIN)/python benchmarks/end_to_end.py
	$(BIN)/python benchmarks/adjoints.py
	$(BIN)/python benchmarks/stiff.py --cases k,b,d  # (a) and (c) at 100 x 100 take far longer: see benchmarks/README.md

clean:
	rm -rf $(VENV) results .pytest_cache
