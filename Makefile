# One-command set-up: every target that needs the environment builds it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test unit integration lint bench eval clean vllm-venv lmms-venv llama-server test-servers

setup: $(STAMP)

# torch first, pinned to the CPU wheel, so nothing pulls a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25.1"
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[all]" --group test --group lint
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/llava-cot demo

test: $(STAMP)
	$(BIN)/python -m pytest tests -q

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit_tests -q

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration_tests -q

# The real-server lane: vLLM's CPU build in its own venv (.ci/setup-vllm), PostgreSQL from the
# machine; -s prints the start-up and per-answer times.
vllm-venv:
	bash .ci/setup-vllm

# lmms-eval in its own venv with this package installed (.ci/setup-lmms): lmms-eval as it is would
# replace the CPU torch with a CUDA build; tests/integration_tests/test_lmms_eval.py runs when it exists.
lmms-venv:
	bash .ci/setup-lmms

# llama.cpp's llama-server, built from the llama-cpp-python sdist into ~/.cache (or $LLAMA_CPP_HOME),
# and the demo model converted to GGUF beside it (.ci/setup-llama-server).
llama-server: $(STAMP)
	bash .ci/setup-llama-server

test-servers: $(STAMP) vllm-venv llama-server
	$(BIN)/python -m pytest tests/integration_tests/test_vllm_server.py tests/integration_tests/test_serve_vllm.py tests/integration_tests/test_llama_cpp_server.py tests/integration_tests/test_postgres_runs.py -q -s

lint: $(STAMP)
	$(BIN)/ruff check langchain_llava_cot tests benchmarks examples graphs
	$(BIN)/ruff format --check langchain_llava_cot tests benchmarks examples graphs
	$(BIN)/mypy langchain_llava_cot

bench: $(STAMP)
	$(BIN)/python benchmarks/search_cost.py

eval: $(STAMP)
	$(BIN)/llava-cot eval --questions 500 --out runs/eval

clean:
	rm -rf $(VENV) .venv-vllm .venv-lmms .pytest_cache .ruff_cache
