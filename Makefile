# One-command setup and test. Targets are idempotent: a second `make setup` is fast and silent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast system-deps corpus corpus-full sweep clean

setup: system-deps $(STAMP)

# pip (not uv/poetry): it takes the local torch wheel instead of downloading gigabytes. pip byte-compiles on one
# core (218 s for the whole install on a 2-core machine); installing without it and compiling on every core takes
# 91 + 69 s. Compiling is not optional where PYTHONDONTWRITEBYTECODE is set: every process would then compile torch
# again (25 s instead of 12 s to import the sweep). compile_dir's result is ignored as pip ignores it: a few test
# files of torch use newer syntax than this Python.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -qq --upgrade pip
	@$(BIN)/python -m pip install -qq --no-compile -e '.[dev]'
	@$(BIN)/python -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_path('purelib'), quiet=2, workers=0)"
	@touch $(STAMP)

system-deps:
	@./scripts/install_system_deps.sh

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The built-in offline corpus (espeak-ng speech + talking faces); returns at once when already built.
corpus: setup
	$(BIN)/python experiments/make_corpus.py --size smoke --out data/corpus/smoke

corpus-full: setup
	$(BIN)/python experiments/make_corpus.py --size full --out data/corpus/full

# The smoke fusion sweep: 4 fusions on the built-in small corpus (built when missing), leaderboard with the Pareto
# front, champion ONNX, MLflow UI links. A timestamped name: a sweep of an existing name is refused unless resumed
# (--resume --name NAME). More flags through SWEEP_ARGS, e.g. `make sweep SWEEP_ARGS="--seed 7"`.
SWEEP_ARGS ?=
sweep: setup
	$(BIN)/python experiments/sweep_fusion.py --space smoke --name smoke-$$(date +%Y%m%d-%H%M%S) $(SWEEP_ARGS)

clean:
	rm -rf outputs .pytest_cache
