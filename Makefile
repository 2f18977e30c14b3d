# irrepro: `make figures` runs the study end to end; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; GPU users override, e.g. TORCH_SPEC='torch==2.13.0' with their index.
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=
STAMP := $(VENV)/.installed
PORT ?= 5000
# the interface of make server: HOST=… on the command line, never from the environment
HOST := 127.0.0.1
# processes of make server
WORKERS ?= 4
DB_URI ?= sqlite:///mlflow-server.db
ARTIFACTS ?= mlartifacts-server
# figures: the studies to run, at which scale (conf/scale/), into which store and folders
STUDIES ?= single_units shuffle_window depth_width embeddings quadratic perturb mitigations fork sources
SCALE ?= small
STORE ?= $(or $(MLFLOW_TRACKING_URI),sqlite:///mlflow.db)
REPORTS ?= reports
FIGURES ?= figures
SUFFIX := $(if $(filter small,$(SCALE)),,_$(SCALE))
# the launcher of make figures: jobs in parallel processes (LAUNCHER= runs them one by one)
LAUNCHER ?= hydra/launcher=local_parallel
# more overrides for train.py in figures and tune, e.g. TRAIN_ARGS='hydra.launcher.n_jobs=4'
TRAIN_ARGS ?=

.PHONY: install test lint ui server figures tune bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(PIP_EXTRA) '$(TORCH_SPEC)'
	$(BIN)/pip install --quiet $(PIP_EXTRA) -e '.[dev,cluster,postgres]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: install
	$(BIN)/ruff check .

# MLflow's GenAI job runner (a pool of huey processes) is off: irrepro has no use for it.
ui server: export MLFLOW_SERVER_ENABLE_JOB_EXECUTION = false

# The UI of a store, for one person: one worker. Both print each experiment's runs table URL
# once the server answers (irrepro/ui_links.py, started beside it).
ui: install
	$(BIN)/python -m irrepro.ui_links http://127.0.0.1:$(PORT) --pid $$$$ & \
	exec $(BIN)/mlflow ui --backend-store-uri $(STORE) --host 127.0.0.1 --port $(PORT) --workers 1

figures: install
	@for study in $(STUDIES); do \
	  echo "== $$study ($(SCALE))"; \
	  $(BIN)/python train.py -m +experiment=$$study +scale=$(SCALE) train.progress=false \
	    tracking.uri=$(STORE) tracking.experiment=$${study}$(SUFFIX) $(LAUNCHER) $(TRAIN_ARGS) \
	    || exit 1; \
	  $(BIN)/python analyze.py --experiment $${study}$(SUFFIX) --tracking-uri $(STORE) \
	    --reports $(REPORTS) --figures $(FIGURES) || exit 1; \
	done

# Reproducibility-aware tuning (conf/experiment/tune.yaml); the study lives in optuna.db.
tune: install
	$(BIN)/python train.py -m +experiment=tune train.progress=false tracking.uri=$(STORE) \
	  $(TRAIN_ARGS)
	$(BIN)/python analyze.py --experiment tune --tracking-uri $(STORE) --reports $(REPORTS) \
	  --figures $(FIGURES) --optuna-study tune --optuna-storage sqlite:///optuna.db

# A shared tracking server: runs arrive over HTTP, artifacts are served through it.
# DB_URI=postgresql://USER@HOST:PORT/DB uses PostgreSQL (driver: psycopg, from make install).
server: install
	$(BIN)/python -m irrepro.ui_links http://$(HOST):$(PORT) --pid $$$$ & \
	exec $(BIN)/mlflow server --backend-store-uri $(DB_URI) --artifacts-destination $(ARTIFACTS) \
	  --host $(HOST) --port $(PORT) --workers $(WORKERS)

bench: install
	$(BIN)/python bench/shuffle.py
	$(BIN)/python bench/replicas.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/loading.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/checkpoints.py
	$(BIN)/python bench/modules.py
	$(BIN)/python bench/calibration.py
	$(BIN)/python bench/mitigations.py
	$(BIN)/python bench/predict_chunks.py

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
