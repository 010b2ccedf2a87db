# The two README commands, each doing its own set-up:
#   make quick   the main job: reproduce the hourglass stacking ablation (quick profile)
#   make test    run the test suite
#   make train   train the quick synthetic Stacked Hourglass alone
#   make yolo    the quick YOLO v1: pretrain its convolutions (once), export them, train the detector
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: quick train yolo test test-fast bench setup clean-runs

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

# YOLO v1's Sec. 2.2 at a CPU's scale: the convolutions learn the shapes as a localiser first; the
# weights file is made once (order-only on the venv, so a new set-up does not redo it).
YOLO_BACKBONE = runs/yolo_v1_backbone_synthetic/backbone.pt
$(YOLO_BACKBONE): | $(VENV)/.installed
	$(PY) -m experiments fit --config experiments/configs/localization/yolo_v1_backbone_synthetic.yaml --run.name yolo_v1_backbone_synthetic
	$(PY) -m experiments export --ckpt runs/yolo_v1_backbone_synthetic/checkpoints/last.ckpt --module network.backbone --out $@

yolo: $(YOLO_BACKBONE)
	$(PY) -m experiments fit --config experiments/configs/detection/yolo_v1_synthetic_quick.yaml

test: $(VENV)/.installed
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

bench: $(VENV)/.installed
	$(PY) -m experiments bench --config experiments/configs/pose/hourglass_synthetic_quick.yaml

clean-runs:
	rm -rf runs
