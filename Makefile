# embedops — every target installs what it needs into .venv on first use, so a fresh clone works.
# Seed targets: train-deps, embed-finetune, embed-quantize, embed-serve. Project: demo, test, test-fast, bench, lint.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall when the pins change: stamps carry a hash of pyproject.toml.
PINS := $(shell sha1sum pyproject.toml | cut -c1-12)

# Seed variables (../SEED.md): DATA OUTPUT EPOCHS BATCH LR USE_LORA BASE MODEL DTYPE PORT NORMALIZE
DATA ?= data/finetune/pairs.tsv
OUTPUT ?= models/embed-finetuned
EPOCHS ?=
BATCH ?=
LR ?=
USE_LORA ?=
BASE ?=
MODEL ?=
DTYPE ?= int8
PORT ?= 8000
NORMALIZE ?=
FORCE ?=
# Pipeline variables: EVAL_DATA (BEIR dir or triples), QUANTIZE int8|int4|none, GATE (one expression), SERVE=1,
# TIME_BUDGET (45m, 2h: the whole run). NPROC=N trains in N processes (finetune and pipeline).
EVAL_DATA ?=
QUANTIZE ?= int8
GATE ?=
SERVE ?=
TIME_BUDGET ?=
NPROC ?=

.PHONY: help install train-deps embed-finetune embed-merge embed-quantize embed-eval embed-serve pipeline demo test test-fast lint bench clean

help:
	@echo "make demo                 the whole pipeline on the bundled model and sample data, then serve it"
	@echo "make pipeline DATA=… OUTPUT=runs/… [EVAL_DATA=… QUANTIZE=int8 GATE='ndcg@10>=+0.5' USE_LORA=1 TIME_BUDGET=45m NPROC=2 SERVE=1]"
	@echo "make test                 install everything into $(VENV) and run the test suite"
	@echo "make test-fast            the unit tests not marked slow (under 3 minutes); make test runs everything"
	@echo "make lint                 ruff check, ruff format --check and mypy"
	@echo "make train-deps           install runtime + training dependencies into $(VENV)"
	@echo "make embed-finetune DATA=… OUTPUT=… [EPOCHS= BATCH= LR= USE_LORA=1 BASE=…]"
	@echo "make embed-quantize MODEL=… OUTPUT=… DTYPE=int8|int4|fp16|bf16"
	@echo "make embed-eval MODEL=… DATA=…      (pairs/triples file, BEIR directory or STS file)"
	@echo "make embed-serve MODEL=… PORT=8000 NORMALIZE=1"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime-$(PINS): | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.train-$(PINS): | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-train.txt
	touch $@ $(VENV)/.runtime-$(PINS)

$(VENV)/.dev-$(PINS): $(VENV)/.train-$(PINS)
	$(BIN)/pip install --quiet -e ".[serve,onnx,train,embed,index,ray,dev,clients]"
	touch $@

install: $(VENV)/.runtime-$(PINS)
train-deps: $(VENV)/.train-$(PINS)

embed-finetune: $(VENV)/.train-$(PINS)
	$(BIN)/embedops finetune --data "$(DATA)" --output "$(OUTPUT)" \
	  $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(BATCH),--batch-size $(BATCH)) $(if $(LR),--lr $(LR)) \
	  $(if $(filter 1 true yes,$(USE_LORA)),--use-lora) $(if $(BASE),--base-model "$(BASE)") \
	  $(if $(NPROC),--nproc $(NPROC)) $(if $(filter 1 true yes,$(FORCE)),--force)

embed-merge: $(VENV)/.train-$(PINS)
	$(BIN)/embedops merge "$(MODEL)" --output "$(OUTPUT)" $(if $(filter 1 true yes,$(FORCE)),--force)

embed-quantize: $(VENV)/.train-$(PINS)
	$(BIN)/embedops quantize --model-path "$(MODEL)" --output "$(OUTPUT)" --dtype "$(DTYPE)" \
	  $(if $(filter 1 true yes,$(FORCE)),--force)

embed-eval: $(VENV)/.train-$(PINS)
	$(BIN)/embedops eval --model "$(MODEL)" --data "$(DATA)"

embed-serve: $(VENV)/.runtime-$(PINS)
	$(BIN)/embedops serve $(if $(MODEL),--model "$(MODEL)") --port "$(PORT)" \
	  $(if $(filter 1 true yes,$(NORMALIZE)),--normalize)

pipeline: $(VENV)/.train-$(PINS)
	$(BIN)/embedops pipeline --data "$(DATA)" --output "$(OUTPUT)" \
	  $(if $(EVAL_DATA),--eval-data "$(EVAL_DATA)") --quantize "$(QUANTIZE)" $(if $(GATE),--gate "$(GATE)") \
	  $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(BATCH),--batch-size $(BATCH)) $(if $(LR),--lr $(LR)) \
	  $(if $(filter 1 true yes,$(USE_LORA)),--use-lora) $(if $(BASE),--base-model "$(BASE)") \
	  $(if $(TIME_BUDGET),--time-budget "$(TIME_BUDGET)") $(if $(NPROC),--nproc $(NPROC)) \
	  $(if $(filter 1 true yes,$(SERVE)),--serve --port "$(PORT)")

demo: $(VENV)/.train-$(PINS)
	$(BIN)/embedops demo

test: $(VENV)/.dev-$(PINS)
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q $(PYTEST_ARGS)

test-fast: $(VENV)/.dev-$(PINS)
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m "not integration and not slow" $(PYTEST_ARGS)

lint: $(VENV)/.dev-$(PINS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.dev-$(PINS)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/train_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/eval_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/quantize_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/serve_bench.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
