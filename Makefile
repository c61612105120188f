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

.PHONY: run test lint format bench soak migrate seed clean system-packages types check-types

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
	$(BIN)/lint-imports

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Debian packages the suite needs, as command:package; each is installed when its command is missing.
# nginx: tests/test_nginx.py; node and npm: the TypeScript client's types; chromium: the Swagger UI test.
DEBIAN_TOOLS := nginx:nginx node:nodejs npm:npm chromium:chromium

# The TypeScript client (clients/typescript): its npm packages are pinned in package-lock.json, and its
# types are generated from the spec. The spec is written with fixed server URLs, so it is the same file
# on every machine.
CLIENT := clients/typescript
SPEC_ENV := APP_ENV=development API_SERVER_PRODUCTION_URL=https://api.allmine.app \
	API_SERVER_DEVELOPMENT_URL=http://127.0.0.1:5000

$(CLIENT)/node_modules/.installed: $(CLIENT)/package-lock.json
	@sh .ci/debian-packages $(DEBIAN_TOOLS)
	cd $(CLIENT) && npm ci --no-audit --no-fund
	@touch $@

# make types: regenerate clients/typescript/openapi.json and src/schema.d.ts from the code (commit both).
types: $(VENV)/.installed $(CLIENT)/node_modules/.installed
	$(SPEC_ENV) $(BIN)/flask --app allmine_auth openapi write $(CLIENT)/openapi.json
	cd $(CLIENT) && npx --no-install openapi-typescript openapi.json --output src/schema.d.ts

# The committed spec and types must be what the code generates, and the client and its type test
# (the seeds' examples through the client) must pass tsc --strict.
check-types: $(VENV)/.installed $(CLIENT)/node_modules/.installed
	@mkdir -p $(CLIENT)/build
	$(SPEC_ENV) $(BIN)/flask --app allmine_auth openapi write $(CLIENT)/build/openapi.json
	cd $(CLIENT) && npx --no-install openapi-typescript build/openapi.json --output build/schema.d.ts
	@for file in openapi.json schema.d.ts; do \
		committed=$(CLIENT)/$$file; [ $$file = openapi.json ] || committed=$(CLIENT)/src/$$file; \
		diff -u $$committed $(CLIENT)/build/$$file >/dev/null || { \
			diff -u $$committed $(CLIENT)/build/$$file | head -40; \
			echo "$$committed differs from the spec the code generates: run make types and commit it" >&2; \
			exit 1; }; \
	done
	cd $(CLIENT) && npx --no-install tsc --strict --noEmit -p .

system-packages:
	@sh .ci/debian-packages $(DEBIAN_TOOLS)

test: lint system-packages check-types
	$(BIN)/pytest

# Needs PostgreSQL and Redis (SOAK_DATABASE_URL, SOAK_REDIS_URL: a database and a Redis db of its own).
soak: $(VENV)/.installed-test
	$(BIN)/python -m tests.soak --seconds $(SOAK_SECONDS)

bench: $(VENV)/.installed-test
	@sh .ci/debian-packages wrk:wrk
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache *.egg-info $(CLIENT)/node_modules $(CLIENT)/build
