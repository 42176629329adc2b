# One-command setup and test. Targets are idempotent: a second `make setup` is fast and silent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint format system-deps corpus corpus-full sweep ui clean

setup: system-deps $(STAMP)

# pip (not uv/poetry): it takes the local torch wheel instead of downloading gigabytes. --no-compile: pip would
# byte-compile every installed module on one core, most of which never run; Python compiles and caches what is
# imported instead (docs/benchmarks.md has the timings). That needs bytecode writing on: where the environment sets
# PYTHONDONTWRITEBYTECODE, every process would compile torch again, so make does not pass it on.
unexport PYTHONDONTWRITEBYTECODE
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -qq --upgrade pip
	@$(BIN)/python -m pip install -qq --no-compile -e '.[dev]'
	@touch $(STAMP)

system-deps:
	@./scripts/install_system_deps.sh

# Lint first: a style error fails the suite in seconds, before the slow tests.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The built-in offline corpus (espeak-ng speech + talking faces); returns at once when already built.
corpus: setup
	$(BIN)/python experiments/make_corpus.py --size smoke --out data/corpus/smoke

corpus-full: setup
	$(BIN)/python experiments/make_corpus.py --size full --out data/corpus/full

# The smoke fusion sweep: the 4 fusions on the built-in medium corpus (built when missing), 2 seeds each; the verdict
# (configurations ranked with 95 % CIs, which are significantly worse than the best), the champion's ONNX, MLflow UI
# links. A timestamped name: a sweep of an existing name is refused unless resumed (--resume --name NAME). More
# flags through SWEEP_ARGS, e.g. `make sweep SWEEP_ARGS="--seed 7 --seeds 3"`.
SWEEP_ARGS ?=
sweep: setup
	$(BIN)/python experiments/sweep_fusion.py --space smoke --name smoke-$$(date +%Y%m%d-%H%M%S) $(SWEEP_ARGS)

# The MLflow UI on the sweeps' store, also while a sweep trains: one worker (with its default several, uvicorn's
# workers keep dying and restarting while training holds both cores, and the UI never answers).
UI_PORT ?= 5000
MLFLOW_URI ?= sqlite:///$(CURDIR)/mlflow.db
ui: $(STAMP)
	$(BIN)/mlflow ui --workers 1 --host 127.0.0.1 --port $(UI_PORT) --backend-store-uri $(MLFLOW_URI)

clean:
	rm -rf outputs .pytest_cache
