# Set-up and the commands the README shows: `make run`, `make study` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=
DATA_DIR := /usr/share/datasets/fashion-mnist

.PHONY: run study budget-study test test-fast data setup-gpu gpu-check clean-venv

# The venv is rebuilt only when a requirements file changes.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The real data from Debian's package where we can install it (root with apt-get);
# elsewhere the runner falls back to Keras' own downloader.
data:
	@if [ -f $(DATA_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "data: $(DATA_DIR) is there"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null \
	  && echo "data: installed dataset-fashion-mnist into $(DATA_DIR)" \
	  || echo "data: apt-get could not install dataset-fashion-mnist; Keras' downloader will be tried"; \
	else \
	  echo "data: no apt-get as root here; the runner will use --data-dir or Keras' downloader"; \
	fi

# On a Linux machine with an NVIDIA GPU: add TensorFlow's CUDA libraries to the venv, then
# `make run` as usual (the runner's first line says which device it trains on).
setup-gpu: $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-gpu.txt
	$(PY) -c "import tensorflow as tf; print('TensorFlow sees', len(tf.config.list_physical_devices('GPU')), 'GPU(s)')"

# The prepared GPU check (benchmarks/gpu_check.sh): runs on a CPU too, skipping its GPU parts.
gpu-check: $(VENV)/.installed-dev data
	bash benchmarks/gpu_check.sh

run: $(VENV)/.installed data
	$(PY) fashion_mnist_cnn.py $(ARGS)

# The claims study: each variant's learning-rate window swept by one rule on seed 0, then
# five seeds at its chosen peak (resumable; the sweep rule sets how many runs each variant gets).
STUDY_DIR ?= results-study
study: $(VENV)/.installed data
	$(PY) fashion_mnist_cnn.py --tune-lr --seeds 0 1 2 3 4 --output-dir $(STUDY_DIR) $(ARGS)

# The training-budget study: the claims at 8 epochs beside the 32-epoch study in docs/, each
# budget's peaks tuned by the same sweep and peak rule, seeds 0-4 (resumable; a clone with
# every run committed trains nothing). docs/ first (its seeds at the chosen peaks), then the
# 8-epoch folder, then one report of both with the budget as a factor -> docs/budget/.
budget-study: $(VENV)/.installed data
	$(PY) fashion_mnist_cnn.py --tune-lr --seeds 0 1 2 3 4 --output-dir docs $(ARGS)
	$(PY) fashion_mnist_cnn.py --tune-lr --seeds 0 1 2 3 4 --epochs 8 --output-dir docs/budget/epochs8 $(ARGS)
	$(PY) fashion_mnist_cnn.py --report-only docs docs/budget/epochs8 --factor epochs=8,32 --output-dir docs/budget

test: $(VENV)/.installed-dev data
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The suite without the tests that train (pytest -m "not trains"): under a minute.
test-fast: $(VENV)/.installed-dev data
	$(PY) -m pytest -q -m "not trains" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
