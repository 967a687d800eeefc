# Two commands from a fresh clone: `make demo` and `make test`. Both (re)create .venv from
# the pyprojects when it is missing or older than them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROJECTS := pyproject.toml hookspecs/pyproject.toml examples/bitmusa-example-plugin/pyproject.toml

.PHONY: setup demo test lint typecheck unit docs bench fuzz clean

$(STAMP): $(PROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./hookspecs -e '.[dev]' -e ./examples/bitmusa-example-plugin
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/bitmusa-plugin demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

# The documentation site: broken links, references and stale pages fail the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck unit docs

# Coverage-guided fuzzing of decode + mapping (atheris, installed on demand): 2M inputs.
FUZZ_RUNS ?= 2000000
fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet 'atheris>=2.3'
	$(BIN)/python fuzz/seed.py build/fuzz-corpus
	$(BIN)/python fuzz/fuzz_decode.py -runs=$(FUZZ_RUNS) -max_len=2048 build/fuzz-corpus

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_mapping.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
