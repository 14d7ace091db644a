# One machine, no setup: `make demo` runs the pipeline end to end, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: setup test demo lint bench clean

$(BIN)/mnad: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[test]"
	touch $@

setup: $(BIN)/mnad

test: setup
	RAY_DATA_DISABLE_PROGRESS_BARS=1 MLFLOW_DISABLE_TELEMETRY=true \
	  $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check mnad pipelines tests scripts

demo: setup
	$(BIN)/mnad demo

bench: setup
	RAY_DATA_DISABLE_PROGRESS_BARS=1 MLFLOW_DISABLE_TELEMETRY=true \
	  $(BIN)/python scripts/bench_all.py

clean:
	rm -rf $(VENV) mnad-runs .pytest_cache
