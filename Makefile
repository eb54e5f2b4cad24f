# The README's two quick-start commands are `make run` and `make test`.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install -q

.PHONY: install install-test run test

install:
	$(PIP_INSTALL) -e .

install-test:
	$(PIP_INSTALL) -e ".[test]"

run: install
	$(PYTHON) harness/run.py --scenario Offline --gpu auto --overwrite

test: install-test
	$(PYTHON) -m pytest -q tests
