# tanji — two commands: `make demo` runs the whole chain, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck pytest system-deps interop-deps clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "tanji needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) -V 2>&1)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); \
	  echo "'$(PYTHON) -m venv' is not available. On Debian/Ubuntu install it with:" >&2; \
	  echo "    sudo apt-get install python3-venv" >&2; \
	  echo "then run this command again." >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/tanji demo $(ARGS)

# Debian packages the tests need: a real Mosquitto broker, mbpoll (Modbus interop),
# victoria-metrics (the InfluxDB mirror's peer) and PostgreSQL (the platform simulator's
# database; the tests start their own server in a temp dir).
system-deps:
	@if { ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; } || \
	    ! command -v mbpoll >/dev/null 2>&1 || ! command -v victoria-metrics >/dev/null 2>&1 || \
	    { ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  echo "installing mosquitto, mbpoll, victoria-metrics and postgresql from Debian packages"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    mosquitto mbpoll victoria-metrics postgresql >/dev/null; \
	fi

lint: $(DEVSTAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(DEVSTAMP)
	$(BIN)/mypy

# an independent OPC UA server for the interop test (node-opcua, pinned by package-lock.json);
# without npm the test says so and is skipped
interop-deps:
	@if command -v npm >/dev/null 2>&1 && [ ! -d bench/opcua_interop/node_modules/node-opcua ]; then \
	  echo "installing node-opcua for the OPC UA interop test (npm ci)"; \
	  (cd bench/opcua_interop && npm ci --no-audit --no-fund --loglevel=error); \
	fi

pytest: $(DEVSTAMP) system-deps interop-deps
	$(BIN)/pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
