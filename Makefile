# `make demo` and `make test`: each creates .venv when missing, installs what it needs
# once (a stamp file newer than pyproject.toml means "installed"), then runs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[io,progress,plot]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/neurocert demo $(DEMO_ARGS)

# pytest options (-ra --durations=25) come from pyproject.toml
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) neurocert-out
