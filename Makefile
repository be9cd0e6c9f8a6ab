# holocell: set-up, demo, tests, benchmarks. Works on a fresh machine with Python >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch, pinned here only (pyproject keeps torch>=2.3 unpinned)
TORCH  ?= torch==2.13.0

.PHONY: install demo test lint bench bench-quick bench-tools bench-streaming bench-chromatin bench-gpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
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

test: $(VENV)/.test-installed
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(VENV)/.installed
	$(BIN)/holocell demo --out build/bench_demo --no-progress
	mkdir -p benchmarks/results
	cp build/bench_demo/results.md benchmarks/results/demo.md
	cp build/bench_demo/results.json benchmarks/results/demo.json
	cp build/bench_demo/umap.png benchmarks/results/demo_umap.png
	for job in pbmc simulated cost scaling; do $(BIN)/python benchmarks/$$job.py || exit 1; done
	$(BIN)/python benchmarks/perturbation.py --out benchmarks/results
	$(BIN)/python benchmarks/grn_pbmc.py
	$(BIN)/python benchmarks/priors.py  # priors ablation + cross-species (mouse cells: scanpy sdist, see DATA.md)
	HOLOCELL_DATA_DIR=$${HOLOCELL_DATA_DIR:-$(abspath ..)/shared/data} $(BIN)/python benchmarks/chromatin.py

bench-quick: $(VENV)/.installed
	for job in pbmc simulated cost scaling; do $(BIN)/python benchmarks/$$job.py --quick --out build/bench_quick || exit 1; done

bench-gpu: $(VENV)/.installed  # needs a CUDA device (and a CUDA build of torch)
	$(BIN)/python benchmarks/gpu.py && $(BIN)/python benchmarks/sweep.py --configs base:30,base:100 --batch-size 32

bench-tools: $(VENV)/.installed
	$(BIN)/python benchmarks/perturbation.py --out benchmarks/results
	$(BIN)/python benchmarks/grn_pbmc.py

bench-streaming: $(VENV)/.installed
	$(BIN)/python benchmarks/streaming.py

# ATAC quality on real cells (SNARE-seq2, Granja 2019) beside MULTIVI / PeakVI / WNN; data from ../shared/data
bench-chromatin: $(VENV)/.installed
	HOLOCELL_DATA_DIR=$${HOLOCELL_DATA_DIR:-$(abspath ..)/shared/data} $(BIN)/python benchmarks/chromatin.py

clean:
	rm -rf $(VENV) demo_output build .pytest_cache
