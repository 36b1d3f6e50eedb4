# Torchwire. Needs only GNU make and Python 3.11 with pip; everything else goes into $(VENV).

PY ?= python3
VENV ?= .venv
PYTEST_ARGS ?=

PYTHON := $(VENV)/bin/python
# Stands for "$(VENV) holds what pyproject.toml asks for"; remade only when pyproject.toml changes.
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run run-prod certs nginx-conf test lint migrate bench bench-peers clean distclean

help: ## List the targets
	@echo "make <target>   (PY=$(PY) VENV=$(VENV))"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 14

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

test: install ## Run the tests (PYTEST_ARGS=...), then lint
	$(PYTHON) -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory lint

lint: install ## ruff and mypy over the whole repository
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

migrate: install ## Apply database migrations
	$(PYTHON) manage.py migrate --noinput

bench: install ## Run the benchmarks in bench/run.py
	@test -f bench/run.py || { echo "bench/run.py does not exist yet" >&2; exit 1; }
	$(PYTHON) bench/run.py

bench-peers: install ## Torchwire against LitServe and MLServer (their venvs under bench/.venvs), round-robin
	$(PYTHON) bench/peers/round_robin.py

clean: ## Remove test databases and caches (keeps the venv and var/ data)
	rm -rf var/test.sqlite3* var/test-* bench/results/*.tmp .mypy_cache .ruff_cache .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## Also remove the venv, var/ (database, Redis data, admin password) and *.egg-info
	rm -rf $(VENV) var *.egg-info
