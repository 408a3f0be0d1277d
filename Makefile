# Integration Hub: the commands a newcomer needs. Everything runs from .venv, made here if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
SIMULATOR_PORT ?= 8090

.PHONY: install demo run test lint format bench bench-pages chaos manage clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

## demo: embedded PostgreSQL + Redis, migrations, demo users, then web + worker + beat (Ctrl-C stops all)
demo: install
	PORT=$(PORT) SIMULATOR_PORT=$(SIMULATOR_PORT) $(BIN)/python -m integration_hub.demo

## test: the whole suite on embedded PostgreSQL and Redis, with a real worker and headless Chromium
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## manage: any manage.py command with the embedded services, e.g. make manage ARGS="createsuperuser"
manage: install
	$(BIN)/python -m integration_hub.devservices run -- $(BIN)/python manage.py $(ARGS)

clean:
	rm -rf var/test-* .pytest_cache staticfiles

## bench: the sync benchmark against the simulator (results in bench/RESULTS.md)
bench: install
	$(BIN)/python -m integration_hub.devservices run --var-dir var/bench -- $(BIN)/python bench/sync_bench.py

## bench-memberships: enrolments and cohorts, bootstrap and read-back, against the simulator (bench/RESULTS.md)
.PHONY: bench-memberships
bench-memberships: install
	$(BIN)/python -m integration_hub.devservices run --var-dir var/bench-memberships -- $(BIN)/python bench/membership_bench.py

## bench-events: a leaver's signed source event to Moodle, over HTTP with a real worker (bench/RESULTS.md)
.PHONY: bench-events
bench-events: install
	$(BIN)/python -m integration_hub.devservices run --var-dir var/bench-events -- $(BIN)/python bench/event_bench.py

## bench-pages: every list page and the Overview at 1,000 and 1,000,000 records (results in bench/RESULTS.md)
bench-pages: install
	$(BIN)/python -m integration_hub.devservices run --var-dir var/bench-pages -- $(BIN)/python bench/pages_bench.py

## chaos: fault experiments on a 5,000-person bootstrap with real workers (results in bench/RELIABILITY.md)
chaos: install
	$(BIN)/python bench/chaos.py
