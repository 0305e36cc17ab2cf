# Every target sets itself up: a missing .venv is created and the project
# installed into it (editable); after that, targets start within seconds.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.convlab-installed
export DAGSTER_HOME := $(or $(CONVLAB_HOME),$(CURDIR)/.convlab)/dagster
# PROFILE=server: Dagster's storage in PostgreSQL and MLflow through a tracking server, both
# started by `make services` (pipelines/server_profile.py); default: the embedded SQLite files.
ifdef PROFILE
export CONVLAB_PROFILE := $(PROFILE)
endif

.PHONY: run test ui explore report clean services services-stop

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	$(PY) -m pipelines.run $(ARGS)

# Dagster (webserver and daemon) on :3000 and MLflow on :5000 over the same stores; Ctrl-C stops them all.
ui: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	$(PY) -m pipelines.ui

# The explorer on a free port of 127.0.0.1 (printed): draw a digit, watch a trained model think.
# ARGS="--model mlp/plain/s0" (any run name or models:/ URI) chooses the model shown first.
explore: $(STAMP)
	$(PY) -m explorer $(ARGS)

# Always on the embedded stores (tests that need servers start their own).
test: $(STAMP)
	env -u CONVLAB_PROFILE $(PY) -m pytest

# The server profile's PostgreSQL (a cluster of its own under .convlab/postgres) and MLflow tracking
# server, on free ports of 127.0.0.1, recorded in .convlab/services.json; they run until services-stop.
services: $(STAMP)
	$(PY) -m pipelines.server_profile start

services-stop: $(STAMP)
	$(PY) -m pipelines.server_profile stop

# The path of the newest lecture report (HTML, self-contained); `make run` writes it last.
report: $(STAMP)
	@$(PY) -m pipelines.report_path

clean:
	rm -rf .convlab
