# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLES ?= data/samples

.PHONY: install browser run test lint bench bench-scale clean

$(BIN)/.installed: pyproject.toml constraints.txt tests/schema-wheels.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip download --quiet --no-deps --dest $(VENV)/schema-wheels \
	  -r tests/schema-wheels.txt
	$(BIN)/python -c "from palette_dask.palette import warm_up; warm_up()"
	$(BIN)/python -c "from palette_dask._transport import warm_up; warm_up()"
	$(BIN)/python -c "from palette_dask._color_loops import warm_up; warm_up()"
# The package's bytecode, written once: every process (a command, a worker, a child
# decoding images apart) then loads it, even where PYTHONDONTWRITEBYTECODE is set.
	$(BIN)/python -m compileall -q palette_dask
	touch $@

install: $(BIN)/.installed

# The HTML report is tested in a real headless Chromium: installed from the
# system packages when missing (as root, with apt); without it, that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "no Chromium and none could be installed: the browser test will be skipped"

run: install
	$(BIN)/palette-dask samples $(SAMPLES)
	$(BIN)/palette-dask run jobs/sample.toml --overwrite
	$(BIN)/palette-dask palettes out/sample

# Test files run in parallel, one process per core (pytest-xdist); a file's tests
# stay together, so its module fixtures are made once.
test: install browser
	$(BIN)/python -m pytest -q -n auto --dist loadfile

lint: install
	$(BIN)/ruff check palette_dask tests benchmarks
	$(BIN)/ruff format --check palette_dask tests benchmarks

bench: install
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/corpus.py
	$(BIN)/python benchmarks/search.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/remote.py
	$(BIN)/python benchmarks/formats.py
	$(BIN)/python benchmarks/containers.py

# A million images through the job, and the largest default partition of 12 MP
# JPEGs (about 25 minutes): not part of bench.
bench-scale: install
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/camera_partition.py

clean:
	rm -rf $(VENV) out data build *.egg-info
