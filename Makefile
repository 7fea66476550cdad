# One command each: `make demo` opens the dashboard on sample_runs/, `make test` runs every test.
# Both create .venv and install torch==2.13.0 before anything that depends on torch.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench samples clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/traindoc serve sample_runs

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/collector_overhead.py

samples: $(STAMP)
	$(BIN)/python sample_runs/generate.py

clean:
	rm -rf $(VENV) .pytest_cache
