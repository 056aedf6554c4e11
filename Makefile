# `make demo` and `make test`: each creates .venv when missing, installs what it needs
# once (a stamp file newer than pyproject.toml means "installed"), then runs.
#
# torch is pinned to 2.13.0 in the same pip command as everything that depends on it:
# that version's CPU wheel is what this project's machines carry, and an unpinned
# torch would pull a multi-GB CUDA build. Users elsewhere get `torch>=2` from the extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
TORCH  := torch==2.13.0
TORCHVISION := torchvision==0.28.0

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: pyproject.toml scripts/install-system-packages.sh | $(BIN)/python
	scripts/install-system-packages.sh demo
	$(PIP) $(TORCH) -e '.[dissect]'
	touch $@

$(VENV)/.installed-test: pyproject.toml scripts/install-system-packages.sh | $(BIN)/python
	scripts/install-system-packages.sh test
	$(PIP) $(TORCH) $(TORCHVISION) -e '.[all]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/neurocert dissect $(DEMO_ARGS)

# pytest options (-ra --durations=25) come from pyproject.toml
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) neurocert-out
