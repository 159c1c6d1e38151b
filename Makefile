# One entry point for set-up, checks, tests, demo and benchmarks. `make test` and `make demo` work on a
# fresh machine: they create the virtual environment from the pinned constraints first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP_VERSION := 25.3
PY_SOURCES := src tests benchmarks tools

.PHONY: venv tools images lint test test-node unit demo bench lock clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[trainer,operator,dev]'
	touch $@

## venv: create .venv with every pinned dependency (idempotent)
venv: $(STAMP)

## tools: install the node's Debian packages (containerd, runc, CNI, buildah, ...), build the control plane,
## kubelet, S3 server and helm from Go modules, unpack Prometheus (~/.cache/nora)
tools:
	bash tools/install-node-packages.sh
	bash tools/build-tools.sh

## images: build the operator, trainer and pause images with buildah (cached in ~/.cache/nora/images)
images: tools
	bash tools/build-images.sh

## lint: ruff, formatting, mypy --strict, import layering, generated CRDs and chart values table up to date
lint: venv
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m nora.api.crd --check
	$(BIN)/python tools/chart_values_table.py --check

## test: everything CI runs: set-up, images, lint, unit + integration + e2e + real-node tests
test: venv tools images lint
	$(BIN)/python -m pytest

## test-node: the real-node tier alone (root; containerd, kubelet, the images from `make images`)
test-node: venv tools images
	$(BIN)/python -m pytest tests/node

## unit: the fast tier only
unit: venv
	$(BIN)/python -m pytest tests/unit

## demo: evolve the quick-start Population on this machine (toy model and data built locally), then report
demo: venv
	$(BIN)/nora run manifests/examples/quickstart.yaml --dir runs/quickstart
	$(BIN)/nora report runs/quickstart

## bench: the benchmark tables
bench: venv
	$(BIN)/python benchmarks/genetics.py

## lock: re-pin constraints.txt from the current virtual environment
lock: venv
	{ echo "# Exact versions tested; regenerate with 'make lock'. Used as pip constraints by 'make venv'."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^nora'; } > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
