# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLES ?= data/samples

.PHONY: install run test lint bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/palette-dask samples $(SAMPLES)
	$(BIN)/palette-dask run jobs/sample.toml --overwrite
	$(BIN)/palette-dask palettes out/sample

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check palette_dask tests benchmarks
	$(BIN)/ruff format --check palette_dask tests benchmarks

bench: install
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/corpus.py

clean:
	rm -rf $(VENV) out data build *.egg-info
