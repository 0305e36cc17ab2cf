# Every target sets itself up: a missing .venv is created and the project
# installed into it (editable); after that, targets start within seconds.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.convlab-installed
export DAGSTER_HOME := $(or $(CONVLAB_HOME),$(CURDIR)/.convlab)/dagster

.PHONY: run test ui explore report clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	$(PY) -m pipelines.run $(ARGS)

# Dagster (dagster dev) on :3000 and MLflow on :5000 over the same stores; Ctrl-C stops both.
ui: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	$(PY) -m pipelines.ui

# The explorer on a free port of 127.0.0.1 (printed): draw a digit, watch a trained model think.
# ARGS="--model mlp/plain/s0" (any run name or models:/ URI) chooses the model shown first.
explore: $(STAMP)
	$(PY) -m explorer $(ARGS)

test: $(STAMP)
	$(PY) -m pytest

# The path of the newest lecture report (HTML, self-contained); `make run` writes it last.
report: $(STAMP)
	@$(PY) -m pipelines.report_path

clean:
	rm -rf .convlab
