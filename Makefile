# The two README commands, each doing its own set-up:
#   make quick   train the quick synthetic Stacked Hourglass (the main job)
#   make test    run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: quick test test-fast bench setup clean-runs

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

quick: $(VENV)/.installed
	$(PY) -m experiments fit --config experiments/configs/pose/hourglass_synthetic_quick.yaml

test: $(VENV)/.installed
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

bench: $(VENV)/.installed
	$(PY) -m experiments bench --config experiments/configs/pose/hourglass_synthetic_quick.yaml

clean-runs:
	rm -rf runs
