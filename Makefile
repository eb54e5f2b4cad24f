# The README's two quick-start commands are `make run` and `make test`.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install -q

.PHONY: install install-test run test

install:
	$(PIP_INSTALL) -e .

# The comparison report's browser test renders the page in Debian's chromium, installed here
# where apt-get can (as root); elsewhere that one test skips and says why.
install-test:
	$(PIP_INSTALL) -e ".[test]"
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the report's browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "chromium not installed: the report's browser test will skip"; \
	fi

run: install
	$(PYTHON) harness/run.py --scenario Offline --gpu auto --overwrite

test: install-test
	$(PYTHON) -m pytest -q tests
