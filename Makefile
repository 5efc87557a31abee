# The commands of DESIGN.md. `make run` and `make test` do everything on a fresh machine.
SHELL := /bin/bash
UV := uv run --frozen
SRC := libs/common/src services/detector/src services/dispatcher/src services/sender/src services/admin-api/src sandbox/src

.PHONY: install infra run test test-unit test-integration test-e2e lint format typecheck migrate demo-restock bench

install:            ## the locked workspace (installs uv from PyPI if missing)
	@scripts/ensure-uv.sh

infra:              ## PostgreSQL, Redis and RabbitMQ answering on loopback (started if down)
	@scripts/infra-up.sh

migrate: install    ## apply migrations to RESTOCK_DATABASE_URL (creates the database if missing)
	$(UV) python -m restock_common.migrate

run: install infra migrate   ## the whole system with the sandbox store, inbox and Twilio, in the foreground
	$(UV) python -m restock_sandbox.stack

demo-restock:       ## restock the demo variant; the alert appears in the sandbox inbox
	$(UV) python -m restock_sandbox.demo restock

test: install infra ## unit, integration and end-to-end tests
	$(UV) pytest

test-unit: install
	$(UV) pytest -m "not integration and not e2e"

test-e2e: install infra
	$(UV) pytest tests/e2e

lint: install       ## ruff (lint + format check) and mypy
	$(UV) ruff check .
	$(UV) ruff format --check .
	$(UV) mypy $(SRC)

format: install
	$(UV) ruff format .
	$(UV) ruff check --fix .

bench: install infra ## every benchmark under bench/, then one table of figures beside their baselines
	@for b in bench/*.py; do echo "== $$b"; $(UV) python $$b || exit 1; done
	@$(UV) python bench/tools/report.py
