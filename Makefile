# corral: `make run` starts a server, `make test` runs every test.
# Both install what is missing first (Debian packages, .venv, the TypeScript SDK),
# and are fast when everything is installed already.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PYTHON := $(VENV)/bin/python
CORRAL := $(VENV)/bin/corral
TS_DIR := tests/e2e/ts
TS_SDK := $(TS_DIR)/node_modules/@opencomputer/sdk/package.json
CONSOLE_DIR := corral/api/console/web
CONSOLE_PKGS := $(CONSOLE_DIR)/node_modules/.package-lock.json
PYTEST_ARGS ?=

.PHONY: help install deps bench-deps run test unit integration e2e lint fmt constraints clean

help:
	@echo "make run          install, build the base template if needed, run corral serve (CORRAL_* env)"
	@echo "make test         install, run the whole test suite (unit, integration, e2e)"
	@echo "make install      Debian packages, Python package in $(VENV), TypeScript SDK for e2e, console packages"
	@echo "make unit | integration | e2e   one part of the suite"
	@echo "make lint         ruff, mypy and the layer contract (tests/unit/test_layers.py)"
	@echo "make bench-deps   install, plus what bench/ uses: wrk, nginx, the bench extra (granian, py-spy)"
	@echo "make constraints  constraints.txt from $(VENV) (after testing new versions)"

install: deps $(VENV)/.installed $(TS_SDK) $(CONSOLE_PKGS)

deps:
	@scripts/install-deps.sh

bench-deps: install
	@scripts/install-deps.sh --bench
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'

$(PYTHON): | deps
	python3 -m venv $(VENV)

# constraints.txt: the exact versions tested, within pyproject.toml's ranges
$(VENV)/.installed: pyproject.toml constraints.txt | $(PYTHON)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

$(TS_SDK): $(TS_DIR)/package.json $(TS_DIR)/package-lock.json | deps
	cd $(TS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# the web console's front-end packages (served by corral serve at /console/vendor)
$(CONSOLE_PKGS): $(CONSOLE_DIR)/package.json $(CONSOLE_DIR)/package-lock.json | deps
	cd $(CONSOLE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

run: install
	$(CORRAL) template build base
	exec $(CORRAL) serve

test: install
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS)

unit: install
	$(PYTHON) -m pytest -ra tests/unit $(PYTEST_ARGS)

integration: install
	$(PYTHON) -m pytest -ra tests/integration $(PYTEST_ARGS)

e2e: install
	$(PYTHON) -m pytest -ra tests/e2e $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check corral tests
	$(VENV)/bin/ruff format --check corral tests
	$(VENV)/bin/mypy
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/unit/test_layers.py

fmt: install
	$(VENV)/bin/ruff format corral tests
	$(VENV)/bin/ruff check --fix corral tests

constraints: | $(PYTHON)
	{ echo "# The exact versions corral is tested with: make install installs these (pip -c)."; \
	  echo "# Written by make constraints from $(VENV) (pip freeze); ranges in pyproject.toml."; \
	  $(PYTHON) -m pip freeze --disable-pip-version-check --exclude-editable; } > constraints.txt

clean:
	rm -rf $(VENV) $(TS_DIR)/node_modules $(CONSOLE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache *.egg-info
