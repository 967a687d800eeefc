# Two commands from a fresh clone: `make demo` and `make test`. Both (re)create .venv from
# the pyprojects when it is missing or older than them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROJECTS := pyproject.toml hookspecs/pyproject.toml examples/bitmusa-example-plugin/pyproject.toml

.PHONY: setup demo test lint typecheck unit compiled unit-compiled docs dist dist-test bench fuzz soak audit redis clean

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
	$(BIN)/lint-imports --no-logo

typecheck: $(STAMP)
	$(BIN)/mypy

# The worker-mode tests need a real redis-server: installed here when it is missing and we
# are root (as in CI); elsewhere this says how, and those tests are skipped.
redis:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing redis-server (Debian package) for the worker-mode tests"; \
	    apt-get install -y -q redis-server >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null 2>&1; }; \
	  else \
	    echo "redis-server not found: install it ('sudo apt-get install redis-server' or" \
	      "'brew install redis'); the Redis tests are skipped until then"; \
	  fi; }

unit: $(STAMP) redis
	$(BIN)/pytest

# The optional compiled core (setup.py; docs/architecture.md "The compiled core"): the hot
# path's pure modules compiled by mypyc into a platform wheel in build/compiled-dist/, as a
# user installs it, unpacked (without its metadata, so that nothing is registered twice) to
# build/compiled/. The pure package stays the reference; this is the same code, faster.
compiled: $(STAMP)
	rm -rf build  # all of it: setuptools would put an earlier build's leftovers in the wheel
	BITMUSA_MYPYC=1 $(BIN)/python -m build --no-isolation --wheel --outdir build/compiled-dist .
	$(BIN)/python -m zipfile -e build/compiled-dist/*.whl build/compiled
	rm -rf build/compiled/*.dist-info

# The suite's tests that drive the compiled modules, again with them first on the path
# (PYTHONSAFEPATH, Python 3.11+: a `python -m bitmusa_plugin` child must not take the source
# tree from its working directory instead). conftest.py refuses to run if they are not what
# is imported, and test_cli's --version checks the children.
COMPILED_TESTS := $(addprefix tests/test_,$(addsuffix .py,hot_path fills_fast mapping_exact \
  fills_property gap_fills trades resync stream dispatch cli public sides outage ccxt_suite))

# A C compiler is installed when it is missing and we are root (as in CI), like redis-server;
# elsewhere, and on Python 3.10 (no PYTHONSAFEPATH), this says why and skips the run.
unit-compiled: $(STAMP) redis
	@command -v cc >/dev/null || command -v gcc >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing gcc (Debian package) for the compiled core"; \
	    apt-get install -y -q gcc >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q gcc >/dev/null 2>&1; }; \
	  fi; }
	@if ! command -v cc >/dev/null && ! command -v gcc >/dev/null; then \
	  echo "no C compiler (cc, gcc): the compiled core is not built and its run is skipped;" \
	    "install one ('sudo apt-get install gcc python3-dev') to test it"; \
	elif ! $(BIN)/python -c "import sys; sys.exit(sys.version_info < (3, 11))"; then \
	  echo "Python 3.10: the compiled run needs PYTHONSAFEPATH (3.11+) and is skipped"; \
	else \
	  $(MAKE) --no-print-directory compiled && \
	  BITMUSA_COMPILED=1 PYTHONSAFEPATH=1 PYTHONPATH=$(CURDIR)/build/compiled \
	    $(BIN)/pytest $(COMPILED_TESTS); \
	fi

# The documentation site: broken links, references and stale pages fail the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck unit unit-compiled docs dist

# The sdist and wheel of both packages (bitmusa-hookspecs, bitmusa-plugin) in dist/, each
# wheel built from its sdist in an isolated environment, then checked by twine. Nothing is
# uploaded. dist/ is emptied first, so it holds exactly this build.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --quiet --outdir dist hookspecs
	$(BIN)/python -m build --quiet --outdir dist .
	$(BIN)/twine check --strict dist/*

# The wheels from `make dist`, installed into a fresh venv outside the clone: the CLI, a
# replay, the simulator, and a scaffolded plugin's own tests and mypy --strict there. Over
# a minute with the build, so `make test` leaves it out (pytest skips tests/test_dist.py
# without BITMUSA_DIST_TEST=1). Needs the package index for the wheels' dependencies.
dist-test: dist
	BITMUSA_DIST_TEST=1 $(BIN)/pytest tests/test_dist.py

# Coverage-guided fuzzing of decode + mapping (atheris, installed on demand): 2M inputs.
FUZZ_RUNS ?= 2000000
fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet 'atheris>=2.3'
	$(BIN)/python fuzz/seed.py build/fuzz-corpus
	$(BIN)/python fuzz/fuzz_decode.py -runs=$(FUZZ_RUNS) -max_len=2048 build/fuzz-corpus

# The chaos soak's full profile: a simulated week of storms and calm days on two accounts,
# 1,000 reconnect cycles under tracemalloc, four hostile plugins (about 6 minutes); then
# the fills property tests' long profiles (tests/test_fills_property.py, and through worker
# handovers tests/test_fills_handover.py; random seeds).
# `make test` runs the reduced profile. BITMUSA_SOAK_SEED=N reruns a reported seed.
# (--timeout=0: the suite's 300 s per test would cut a long profile short, and hypothesis
# then reports the cut example as flaky data generation.)
soak: $(STAMP)
	BITMUSA_SOAK_PROFILE=week $(BIN)/pytest tests/chaos -s -p no:cacheprovider --timeout=0
	BITMUSA_FILLS_PROFILE=long $(BIN)/pytest tests/test_fills_property.py tests/test_fills_handover.py -p no:cacheprovider --timeout=0

# Known vulnerabilities in the installed set. Needs the PyPI JSON API or OSV on the
# network, which the build machines do not reach, so it is not part of `make test`.
audit: $(STAMP)
	$(BIN)/python -m pip install --quiet 'pip-audit>=2.7'
	$(BIN)/pip-audit --skip-editable

# The benchmarks of docs/benchmarks.md, each printing ratios against a baseline measured in
# the same run (about 8 minutes), then its plots (matplotlib, installed on demand).
bench: $(STAMP) redis
	$(BIN)/python benchmarks/bench_mapping.py
	$(BIN)/python benchmarks/bench_e2e.py
	$(BIN)/python benchmarks/bench_dispatch.py
	$(BIN)/python benchmarks/bench_accounts.py
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_redis.py
	$(BIN)/python -m pip install --quiet 'matplotlib>=3.7'
	$(BIN)/python benchmarks/plots.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build
