# `make test` installs the test extras and the official reference (wan22, without its heavy
# dependencies), then lints and runs the suite. pytest's exit 5 means it collected no test: the
# suite was not found, which must fail loudly rather than pass as an empty run.
PYTHON ?= python
WAN22 = wan22==2.2.11

.PHONY: test lint install-test

install-test:
	$(PYTHON) -m pip install -q -e '.[test]'
	$(PYTHON) -m pip install -q --no-deps $(WAN22)

lint:
	$(PYTHON) -m ruff check .

test: install-test lint
	@$(PYTHON) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: run make test from the repository root"; fi; \
	exit $$rc
