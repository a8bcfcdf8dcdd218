# First-time set-up happens on demand: every target below depends on the venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
IMPL ?= torch
DEVICE ?= cpu
TIER ?= gate
REPORT ?= report

.PHONY: verify test pytest setup clean

# The venv is made once. Where $(PYTHON) already has torch (a ROCm runner's image,
# with its aiter), the venv sees those packages and keeps them; elsewhere torch
# 2.13.0 (CPU build) goes in first, since an unpinned torch would pull a multi-GB
# CUDA build.
$(BIN)/python:
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "using the torch installed for $(PYTHON): $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  $(PYTHON) -m venv $(VENV); \
	fi

$(BIN)/numguard: pyproject.toml | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $(BIN)/numguard

# tox alone, for `make test`: its environments install torch 2.13.0 and numguard
# themselves, so the test run does not need the verify set-up above
$(BIN)/tox: | $(BIN)/python
	$(BIN)/pip install --quiet "tox>=4.11"

setup: $(BIN)/numguard

verify: $(BIN)/numguard
	$(BIN)/numguard verify --impl $(IMPL) --device $(DEVICE) --tier $(TIER) --report $(REPORT)

# the CPU environments in tox.ini: lint, unit, property, golden
test: $(BIN)/tox
	$(BIN)/tox

# the same checks in .venv, without tox's fresh environments (quicker while editing)
pytest: $(BIN)/numguard
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(REPORT) .tox .pytest_cache .hypothesis
