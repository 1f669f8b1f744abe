# Quick start: `make demo` trains SIGMA on the built-in synthetic data; `make test` runs the
# test suite. Both create .venv on first use. TORCH_SPEC picks the torch build: the default
# pin is a CPU wheel; e.g. `make TORCH_SPEC="torch==2.5.1" demo` or a CUDA build for GPUs.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test lint install clean

$(BIN)/sigma-pyro: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/sigma-pyro

demo: install
	$(BIN)/sigma-pyro train --out runs/demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
