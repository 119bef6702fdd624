# Gantry. Two commands matter:
#   make run    the portal with demo data on http://127.0.0.1:8000/ (SQLite, embedded Redis)
#   make test   lint, Django checks and the whole test suite (PostgreSQL and Redis)
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help run test check lint fmt bench bench-under-load soak requirements clean

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Stamps record what was installed; pip runs again only when a pin changes.
RUNTIME_STAMP := $(VENV)/.installed-requirements
DEV_STAMP := $(VENV)/.installed-requirements-dev

# Where the tests find their services; override on the command line or in the environment.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/gantry
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
TEST_ENV := DATABASE_URL="$${DATABASE_URL:-$(TEST_DATABASE_URL)}" \
	REDIS_URL="$${REDIS_URL:-$(TEST_REDIS_URL)}" \
	SECRET_KEY=test-secret-key-not-for-production AUDIT_KEY=test-audit-key-not-for-production \
	HTTPS=0 DEBUG=0 PREPARED_QUERIES_CHECK=1
PYTEST_ARGS ?= -n 2

help:
	@echo "make run     start the portal with demo data (http://127.0.0.1:8000/)"
	@echo "make test    lint, Django checks, migrations check and the test suite"
	@echo "make lint    ruff check and format check, imports against the layers"
	@echo "make fmt     format and fix what ruff can"
	@echo "make bench   run the benchmarks"
	@echo "make bench-under-load   the benchmarks while the test suite runs alongside"
	@echo "make soak    the deploy engine under many random sequences"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Gantry needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv --clear $(VENV)

$(RUNTIME_STAMP): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-r requirements.txt -r requirements-dev.txt
	@touch $@ $(RUNTIME_STAMP)

# The demo deploys into the sandbox (moto, the Terraform wheels), which come
# with the dev pins; production images install requirements.txt only.
run: $(DEV_STAMP)
	@scripts/run.sh

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/check_layers.py

fmt: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Django's own checks: once with the test values, once as production would run
# (a fresh random key each time, HTTPS on), where any warning fails the build.
check: $(DEV_STAMP)
	$(TEST_ENV) $(BIN)/python manage.py check --fail-level WARNING
	DEBUG=0 HTTPS=1 ALLOWED_HOSTS=gantry.example.com \
		SECRET_KEY="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
		AUDIT_KEY="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
		$(BIN)/python manage.py check --deploy --fail-level WARNING
	$(TEST_ENV) $(BIN)/python manage.py makemigrations --check --dry-run

# The SSO tests' OpenID provider (tests/oidc_provider): node-oidc-provider, pinned
# in its package-lock.json. npm ci leaves node_modules/.package-lock.json behind.
OIDC_PROVIDER := tests/oidc_provider/node_modules/.package-lock.json
$(OIDC_PROVIDER): tests/oidc_provider/package-lock.json
	cd tests/oidc_provider && npm ci --no-audit --no-fund

test: lint check $(OIDC_PROVIDER)
	$(TEST_ENV) $(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

# The engine under many random sequences (tests/deployments/test_engine_sequences.py):
# `make soak SEQUENCE_EXAMPLES=200 SEQUENCE_STEPS=25`; figures in var/soak.jsonl.
SEQUENCE_EXAMPLES ?= 100
SEQUENCE_STEPS ?= 20
soak: $(DEV_STAMP)
	@mkdir -p var
	$(TEST_ENV) SEQUENCE_EXAMPLES=$(SEQUENCE_EXAMPLES) SEQUENCE_STEPS=$(SEQUENCE_STEPS) \
		SEQUENCE_RANDOM=1 SEQUENCE_REPORT=var/soak.jsonl \
		$(BIN)/python -m pytest -p no:cacheprovider -p no:xdist -x tests/deployments/test_engine_sequences.py
	@tail -n 1 var/soak.jsonl

bench: $(DEV_STAMP)
	@if [ -f bench/__main__.py ]; then $(TEST_ENV) $(BIN)/python -m bench $(BENCH_ARGS); \
	else $(TEST_ENV) $(BIN)/python bench/run_all.py; fi

bench-under-load: $(DEV_STAMP)
	scripts/bench-under-load.sh

# Re-pin requirements*.txt from requirements*.in (pip-tools in a throwaway venv).
requirements: | $(BIN)/python
	scripts/compile-requirements.sh

clean:
	rm -rf var/static test-results .pytest_cache .ruff_cache
