# trading_pipelines — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home

.PHONY: install run test ui system-deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## Replay the spot strategy over its latest 30 windows on the embedded defaults
## (SQLite ledger, local chart folder, replay data, rules signals, paper venue).
run: install
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/trading-pipelines replay spot_4h_majors --last 30

## Tools the service tests need that pip cannot provide (Debian's docker-compose validates the compose file).
system-deps:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null) \
	      || echo "warning: could not install docker-compose"; \
	  else echo "note: install docker-compose to run the compose test"; fi; }

## Create the environment, check the import layers, and run every test (Postgres and S3 tests run when CI is set).
test: install system-deps
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

## The Dagster UI on http://127.0.0.1:3000, sharing DAGSTER_HOME and the ledger with the CLI.
ui: install
	mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml || true
	$(VENV)/bin/dagster dev -w workspace.yaml

clean:
	rm -rf var
