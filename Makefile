# holocell: set-up, demo, tests, benchmarks. Works on a fresh machine with Python >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch pinned here only (pyproject keeps torch>=2.3 unpinned). The package index CI installs from serves its CPU
# build; on a Linux machine whose index is PyPI, add the CPU index (docs/installation.md):
#   make demo TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: install demo test lint bench bench-quick bench-summary bench-tools bench-streaming bench-chromatin bench-gpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)" $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/holocell demo --out demo_output

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests scripts benchmarks

# one pytest process per core (pytest-xdist), each on one thread (torch's and numba's: numba's UMAP threads on top
# of the other worker doubled the run time of the tutorials and the demo test): tiny models are faster that way
# than on a shared pool, and the suite fits CI's budget on 2 cores (TEST_WORKERS=0 runs it in one process); whole test files
# go to a worker in tests/conftest.py's order (the slow files first), so a file's module-scoped trained model is
# built once
TEST_WORKERS ?= auto
test: $(VENV)/.test-installed
	$(BIN)/ruff check src tests scripts benchmarks
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} NUMBA_NUM_THREADS=$${NUMBA_NUM_THREADS:-1} $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Every benchmark script writes its own results/<name>.md|json (with date, commit, machine, command, settings);
# summary.py then builds docs/benchmarks.md and the model card from those JSON files only.
BENCH_OUT ?= benchmarks/results
BENCH_DATA = HOLOCELL_DATA_DIR=$${HOLOCELL_DATA_DIR:-$(abspath ..)/shared/data}
BENCH_JOBS = demo pbmc simulated cost scaling steps grn_pbmc transfer zeroshot_scaling annotation_confidence
BENCH_PY = cd benchmarks && $(BENCH_DATA) $(abspath $(BIN))/python

bench: $(VENV)/.installed
	for job in $(BENCH_JOBS); do ($(BENCH_PY) $$job.py --out $(abspath $(BENCH_OUT))) || exit 1; done
	$(BENCH_PY) perturbation.py --out $(abspath $(BENCH_OUT))
	$(BENCH_PY) priors.py --out $(abspath $(BENCH_OUT))  # cross-species needs --mouse-zarr (scanpy sdist, see DATA.md)
	$(BENCH_PY) chromatin.py --out $(abspath $(BENCH_OUT))
	$(BENCH_PY) streaming.py --out $(abspath $(BENCH_OUT))
	$(BIN)/python benchmarks/summary.py --results $(BENCH_OUT)

bench-quick: $(VENV)/.installed
	for job in $(BENCH_JOBS); do ($(BENCH_PY) $$job.py --quick --out $(abspath $(BENCH_OUT))) || exit 1; done
	$(BENCH_PY) perturbation.py --quick --out $(abspath $(BENCH_OUT))
	$(BENCH_PY) priors.py --quick --out $(abspath $(BENCH_OUT))
	$(BENCH_PY) chromatin.py --quick --out $(abspath $(BENCH_OUT))
	$(BENCH_PY) streaming.py --quick --out $(abspath $(BENCH_OUT))
	$(BIN)/python benchmarks/summary.py --results $(BENCH_OUT)

bench-summary:
	$(BIN)/python benchmarks/summary.py --results $(BENCH_OUT)

bench-gpu: $(VENV)/.installed  # needs a CUDA device (and a CUDA build of torch)
	$(BENCH_PY) gpu.py --out $(abspath $(BENCH_OUT)) && $(BENCH_PY) sweep.py --configs base:30,base:100 --batch-size 32 --out $(abspath $(BENCH_OUT))
	$(BIN)/python benchmarks/summary.py --results $(BENCH_OUT)

bench-tools: $(VENV)/.installed
	$(BENCH_PY) perturbation.py --out $(abspath $(BENCH_OUT))
	$(BENCH_PY) grn_pbmc.py --out $(abspath $(BENCH_OUT))

bench-streaming: $(VENV)/.installed
	$(BENCH_PY) streaming.py --out $(abspath $(BENCH_OUT))

# ATAC quality on real cells (SNARE-seq2, Granja 2019) beside MULTIVI / PeakVI / WNN; data from ../shared/data
bench-chromatin: $(VENV)/.installed
	$(BENCH_PY) chromatin.py --out $(abspath $(BENCH_OUT))

clean:
	rm -rf $(VENV) demo_output build .pytest_cache
