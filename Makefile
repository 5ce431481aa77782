# adamspec — set-up and entry points.
#
#   make run        set up, then run the main job (.venv/bin/adamspec run --jobs $(JOBS) $(ARGS)),
#                   then its mixed-precision view (the quick suite in $(PRECISION_VIEW))
#   make test       set up, then the fast test suite (pytest -m "not slow")
#   make test-slow  set up, then every test incl. `slow` ones, with the large hypothesis profile
#   make lint       set up Python, then ruff check .
#   make setup      only the set-up (Python venv + TF.js Node packages)
#   make clean      remove caches and build outputs (not out/); make distclean also .venv
#
# Set-up is idempotent: stamp files record what was installed from which inputs,
#   .venv/.installed          <- pyproject.toml, constraints.txt
#   .venv/.tfjs-installed     <- impl/adapters/tfjs_node/package{,-lock}.json
# so a second `make test` does no pip or npm work. The TF.js packages go where an installed
# adamspec looks for them too (`adamspec setup tfjs`: $ADAMSPEC_TFJS_HOME, else
# ~/.cache/adamspec/tfjs), so a checkout and a wheel install behave the same.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --no-print-directory

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
EXTRAS := all,test

PY_STAMP   := $(VENV)/.installed
NODE_STAMP := $(VENV)/.tfjs-installed
NODE_LOCK  := impl/adapters/tfjs_node/package.json impl/adapters/tfjs_node/package-lock.json

ARGS        ?=
# 1: every task in this process. On 2 cores that is faster than a local Dask cluster of 2
# (measured: adamspec run --quick took 200.8 s with --jobs 1, 299.7 s with --jobs 2: the
# fast oracle already uses both cores, and each worker imports every framework again).
JOBS        ?= 1
PYTEST_ARGS ?=
# The main job's mixed-precision view: the quick suite in this precision (16-bit params,
# float32 moments and master), reports in out/$(PRECISION_VIEW)/; implementations that do
# not run it are skipped, in one line. Measured: 48 s wall (46 s CPU; 1 min 46 s while
# other jobs shared the 2 cores) beside the main job's ~20 min. Empty: no view.
PRECISION_VIEW ?= bf16-fp32master

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1
export PIP_PROGRESS_BAR := off
export npm_config_fund := false
export npm_config_audit := false
export npm_config_update_notifier := false

# This machine's pip config lists local indexes that hold only some projects; pip warns
# once per other project. Drop that noise from the install log (pip's exit code is kept).
PIP_NOISE := is ignored: it is neither a file nor a directory

# Fail loudly unless the interpreter is CPython >= 3.11 ($(1): the interpreter).
define check_python
	@$(1) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
	  echo "error: adamspec needs Python >= 3.11; '$(1)' is $$(command -v $(1) >/dev/null && $(1) --version 2>&1 || echo 'not found')." >&2; \
	  echo "       Use PYTHON=python3.11 (or newer), and 'make distclean' if .venv was made by an older one." >&2; \
	  exit 1; }
endef

.PHONY: setup setup-python setup-node run test test-slow lint clean distclean

setup: setup-python setup-node
setup-python: $(PY_STAMP)
setup-node: $(NODE_STAMP)

$(VENV)/pyvenv.cfg:
	$(call check_python,$(PYTHON))
	@echo "==> creating $(VENV) with $$($(PYTHON) --version)"
	$(PYTHON) -m venv $(VENV)

$(PY_STAMP): $(VENV)/pyvenv.cfg pyproject.toml constraints.txt
	$(call check_python,$(PY))
	@echo "==> $(PIP) install -c constraints.txt -e '.[$(EXTRAS)]'  (first time: a few minutes)"
	@$(PIP) install -q -c constraints.txt -e '.[$(EXTRAS)]' 2>&1 | { grep -v -F '$(PIP_NOISE)' || true; }
	@$(PY) -c 'import torch; assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__' \
	  || { echo "error: torch in $(VENV) is not 2.13.0 (see constraints.txt)" >&2; exit 1; }
	@touch $@

$(NODE_STAMP): $(PY_STAMP) $(NODE_LOCK)
	@command -v npm >/dev/null || { echo "error: npm (Node.js >= 18) is needed for the TF.js packages" >&2; exit 1; }
	@echo "==> adamspec setup tfjs (npm ci of the pinned TF.js packages)"
	$(VENV)/bin/adamspec setup tfjs
	@touch $@

run: setup
	$(VENV)/bin/adamspec run --jobs $(JOBS) $(ARGS)
ifneq ($(PRECISION_VIEW),)
	@echo "==> the mixed-precision view: adamspec run --quick --precision $(PRECISION_VIEW)"
	$(VENV)/bin/adamspec run --quick --precision $(PRECISION_VIEW) --jobs $(JOBS) \
	  --out out/$(PRECISION_VIEW)
endif

# Every pinned framework is installed by `setup`: a missing one fails its tests (tests/needs.py).
test: setup
	ADAMSPEC_REQUIRE_FRAMEWORKS=1 $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	ADAMSPEC_REQUIRE_FRAMEWORKS=1 ADAMSPEC_HYPOTHESIS_PROFILE=slow $(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup-python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf build dist .pytest_cache .ruff_cache .hypothesis *.egg-info
	find . -path ./.venv -prune -o -path ./node_modules -prune -o -name __pycache__ -type d -print0 \
	  | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) node_modules
