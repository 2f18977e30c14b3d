# irrepro: `make figures` runs the study end to end; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; GPU users override, e.g. TORCH_SPEC='torch==2.13.0' with their index.
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=
STAMP := $(VENV)/.installed
PORT ?= 5000
SCALE ?= small
STORE ?= sqlite:///mlflow.db

.PHONY: install test lint ui server figures tune bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(PIP_EXTRA) '$(TORCH_SPEC)'
	$(BIN)/pip install --quiet $(PIP_EXTRA) -e '.[dev,cluster]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

ui: install
	$(BIN)/mlflow ui --backend-store-uri $(STORE) --host 127.0.0.1 --port $(PORT)

bench: install
	$(BIN)/python bench/replicas.py
	$(BIN)/python bench/metrics.py

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
