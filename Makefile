# Two commands do everything (see README): `make repro` and `make test`.
# Both create .venv from the exact-pinned lock when needed; a second run installs nothing.

PYTHON  ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PORT    ?= 5000
DRAW_PORT ?= 8000
BUDGET  ?= 600
WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help setup repro exp test test-fast deps lint lock ui draw plots bench retrain train-multiworker server server-stop clean

help:  ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml scripts/venv_path.pth
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@# dvc.yaml runs `python stages/...`: put this venv first on PATH for every process it starts,
	@# so `.venv/bin/dvc repro` works without activating the venv.
	cp scripts/venv_path.pth "$$($(BIN)/python -c 'import site; print(site.getsitepackages()[0])')/"
	@touch $@

setup: $(STAMP)  ## Create .venv and install the locked dependencies

repro: $(STAMP)  ## Run the whole pipeline (dvc repro), then summarise what it built
	$(BIN)/dvc repro
	@$(BIN)/python -m mnist_vae.summary

exp: $(STAMP)  ## Run a DVC experiment with a config overlay: make exp CONFIG=configs/seed-article.yaml
	@test -n "$(CONFIG)" || { echo "usage: make exp CONFIG=configs/<name>.yaml"; exit 2; }
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python scripts/exp_run.py $(CONFIG) $(EXP_ARGS)

test: $(STAMP)  ## Run the whole test suite, end-to-end tests included (installs what it needs)
	scripts/install_test_deps.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && echo "no tests selected" && rc=0; exit $$rc

test-fast: $(STAMP)  ## Run the fast unit tests only (inner loop)
	$(BIN)/python -m pytest -m "not slow" -x -q

deps: $(STAMP)  ## Rewrite dvc.yaml's module deps to each stage's import closure (tests/test_dvc_map.py checks it)
	$(BIN)/python scripts/sync_deps.py

lint: $(STAMP)  ## Lint the code (ruff)
	$(BIN)/ruff check src stages tests benchmarks scripts

lock:  ## Re-resolve requirements.lock from pyproject.toml (needs network access to PyPI)
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links --extra dev --output-file requirements.lock pyproject.toml

ui: $(STAMP)  ## Serve the MLflow UI on http://127.0.0.1:$(PORT) over the local store
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --workers 1 \
		--backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port $(PORT)

# The team stack (docs/team.md): PostgreSQL + MLflow with basic auth, state in $(TEAM_STATE)/.
TEAM_STATE   ?= .team
TEAM_PORT    ?= 5000
TEAM_PG_PORT ?= 5433
TEAM = PYTHONPATH=$(CURDIR)/src $(BIN)/python scripts/team_stack.py --state $(TEAM_STATE) \
	--port $(TEAM_PORT) --pg-port $(TEAM_PG_PORT)

server: $(STAMP)  ## Start PostgreSQL + MLflow with basic auth on 127.0.0.1 (TEAM_PORT=5000); prints the client env
	$(TEAM) start

server-stop: $(STAMP)  ## Stop the team stack (data and passwords stay in .team/)
	$(TEAM) stop

draw: $(STAMP)  ## Serve the drawing page on http://127.0.0.1:$(DRAW_PORT) (champion, else models/vae.keras)
	$(BIN)/python -m mnist_vae web --port $(DRAW_PORT) $(if $(MODEL),--model $(MODEL))

plots: $(STAMP)  ## Render every DVC plot to dvc_plots/index.html (draws offline: plots_template/)
	$(BIN)/dvc plots show

# COMMIT=1 commits dvc.lock and the metrics: on main, the command that refreshes what git carries
retrain: $(STAMP)  ## Pull, reproduce, push on main, report against main; COMMIT=1 commits the lock
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC=$(BIN)/dvc scripts/retrain.sh

train-multiworker: $(STAMP)  ## Train on WORKERS local processes (tf.distribute multi_worker)
	PYTHONPATH=$(CURDIR)/src $(BIN)/python scripts/train_multiworker.py --workers $(WORKERS)

$(VENV)/.bench-installed: $(STAMP) pyproject.toml
	$(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench'], sep='\n')" > $(VENV)/.bench-requirements
	$(BIN)/python -m pip install --quiet -r $(VENV)/.bench-requirements -c requirements.lock
	@touch $@

bench: $(VENV)/.bench-installed  ## Benchmark against public VAE examples (BUDGET=600 s per model)
	PYTHONPATH=$(CURDIR)/src:$(CURDIR) $(BIN)/python -m benchmarks.run --budget $(BUDGET) --readme docs/benchmark.md $(BENCH_ARGS)

clean:  ## Remove .venv and caches (keeps data, models and the MLflow store)
	rm -rf $(VENV) .pytest_cache .ruff_cache
