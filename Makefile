# First-time set-up happens on demand: every target below depends on the venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
IMPL ?= torch
DEVICE ?= cpu
TIER ?= gate
REPORT ?= report

.PHONY: verify test setup clean

$(BIN)/numguard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# torch first, pinned to the CPU build; an unpinned torch would pull a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $(BIN)/numguard

setup: $(BIN)/numguard

verify: $(BIN)/numguard
	$(BIN)/numguard verify --impl $(IMPL) --device $(DEVICE) --tier $(TIER) --report $(REPORT)

test: $(BIN)/numguard
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(REPORT) .pytest_cache .hypothesis
