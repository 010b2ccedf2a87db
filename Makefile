# The two README commands, each doing its own set-up:
#   make quick   the main job: reproduce the hourglass stacking ablation (quick profile)
#   make test    run the test suite
#   make train   train the quick synthetic Stacked Hourglass alone
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: quick train test test-fast bench setup clean-runs

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-dashboard.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

quick: $(VENV)/.installed
	$(PY) -m experiments reproduce hourglass_stacking --profile quick

train: $(VENV)/.installed
	$(PY) -m experiments fit --config experiments/configs/pose/hourglass_synthetic_quick.yaml

test: $(VENV)/.installed
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

bench: $(VENV)/.installed
	$(PY) -m experiments bench --config experiments/configs/pose/hourglass_synthetic_quick.yaml

clean-runs:
	rm -rf runs
