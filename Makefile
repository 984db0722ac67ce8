# MacPool developer commands. `make run` serves on SQLite; `make test` runs the whole suite.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint check bench clean install install-test

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[test]'
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## Create the venv, install, migrate and serve UI + API on http://127.0.0.1:8080 (SQLite).
run: $(VENV)/.installed
	$(BIN)/macpool serve

## Static checks: ruff, formatting, mypy (strict for manager, scopes, plugins), import layers.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## Everything: static checks, then the suite on SQLite and on a throwaway PostgreSQL.
test: lint
	tools/with-postgres.sh $(BIN)/pytest $(PYTEST_ARGS)

## Benchmarks (figures go to docs/BENCHMARKS.md by hand, with the date).
bench: $(VENV)/.installed-test
	tools/with-postgres.sh $(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache test-artifacts
