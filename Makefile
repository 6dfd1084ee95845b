# `make run` starts Tollgate on the embedded default; `make test` runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

CLIENTS := tests/e2e/clients
CLIENTS_STAMP := $(CLIENTS)/node_modules/.installed-stamp

.PHONY: install clients run migrate test test-unit test-int lint fmt typecheck bench bench-usage bench-search bench-units bench-processes bench-soak up clean

$(STAMP): pyproject.toml sdk/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./sdk
	@touch $(STAMP)

install: $(STAMP)

# The Node clients the compatibility suite runs (tests/e2e/clients), exactly as locked.
$(CLIENTS_STAMP): $(CLIENTS)/package.json $(CLIENTS)/package-lock.json
	cd $(CLIENTS) && npm ci --no-audit --no-fund
	@touch $(CLIENTS_STAMP)

clients: $(CLIENTS_STAMP)

run: install
	$(BIN)/tollgate serve

migrate: install
	$(BIN)/tollgate migrate

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy

# Starts throwaway PostgreSQL and Redis servers (installing them with apt-get when missing and
# running as root), runs the suite against them, and stops them.
test: lint typecheck clients
	$(BIN)/python tools/testenv.py -- $(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-int: install clients
	$(BIN)/python tools/testenv.py -- $(BIN)/python -m pytest tests/integration tests/e2e

# Needs wrk (apt-get install wrk) and the PostgreSQL and Redis servers tools/testenv.py starts.
bench: install
	$(BIN)/python bench/run.py

bench-usage: install
	$(BIN)/python bench/usage.py

bench-search: install
	$(BIN)/python bench/search.py

bench-units: install
	$(BIN)/python bench/units.py

bench-processes: install
	$(BIN)/python bench/processes.py

bench-soak: install
	$(BIN)/python bench/soak.py

up:
	docker compose up --build

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
