# One-command set-up on a fresh machine. torch/torchvision come from pip with the
# machine's constraint file (no uv/poetry: they ignore it).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast digits stress bench-gpu clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[demo,test,onnx,mlflow,report,parquet,cloud]'
	touch $(STAMP)

install: $(STAMP)

# The whole suite (what CI runs) on TEST_WORKERS pytest-xdist workers. --dist worksteal keeps
# both busy to the end (tests/conftest.py starts the slow tests first); a module-scoped finished
# run may be built once per worker. Its time and CPU, and how they were measured:
# docs/index.md#tests.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The edit-test loop: no process starts, no multi-second tests (under 2 minutes on 2 cores).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Quick start: train the bundled-digits recipe (installs first if needed). A rerun moves the
# previous run aside (output/digits.bak-*) and keeps only that one, so reruns do not fill the disk.
digits: $(STAMP)
	$(VENV)/bin/resnest-train --config-file recipes/digits.yaml --outdir output/digits --force --keep-previous 1

# Random-kill stress test of exact resume (not part of `make test`).
stress: $(STAMP)
	$(PY) -m tests.stress_resume --runs 20 --seed 0

# GPU benchmark suite (under 8 minutes on one CUDA GPU; a smoke run at tiny sizes without one):
# writes output/bench-gpu/gpu_suite.json and gpu_suite.md.
bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu_suite.py --out output/bench-gpu

clean:
	rm -rf $(VENV) *.egg-info
