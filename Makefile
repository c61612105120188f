# make run: set up (virtualenv, install, migrations, demo data) and serve the API with Swagger UI.
# make test: set up with the test extras, lint, and run the whole suite.
# make soak: 10 minutes of logins under PostgreSQL/Redis cuts and killed workers, checked (tests/soak.py).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
SOAK_SECONDS ?= 600
HOST ?= 127.0.0.1
export PORT

.PHONY: run test lint format bench soak migrate seed clean system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

migrate: $(VENV)/.installed
	APP_ENV=development $(BIN)/flask --app allmine_auth db upgrade

seed: migrate
	APP_ENV=development $(BIN)/flask --app allmine_auth seed

run: seed
	@echo "Swagger UI: http://$(HOST):$(PORT)/docs   spec: http://$(HOST):$(PORT)/openapi.json"
	APP_ENV=development $(BIN)/flask --app allmine_auth run --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Debian packages the suite needs, as command:package; each is installed when its command is missing.
DEBIAN_TOOLS := nginx:nginx

system-packages:
	@sh .ci/debian-packages $(DEBIAN_TOOLS)

test: lint system-packages
	$(BIN)/pytest

# Needs PostgreSQL and Redis (SOAK_DATABASE_URL, SOAK_REDIS_URL: a database and a Redis db of its own).
soak: $(VENV)/.installed-test
	$(BIN)/python -m tests.soak --seconds $(SOAK_SECONDS)

bench: $(VENV)/.installed-test
	@sh .ci/debian-packages wrk:wrk
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache *.egg-info
