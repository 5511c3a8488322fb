# `make test` installs the test extras and the official reference (wan22, without its heavy
# dependencies), then lints and runs the suite, then times the C++ CPU kernels (`make bench-cpu`).
# pytest's exit 5 means it collected no test: the suite was not found, which must fail loudly
# rather than pass as an empty run.
PYTHON ?= python
WAN22 = wan22==2.2.11

.PHONY: test lint install-test bench-cpu

install-test:
	$(PYTHON) -m pip install -q -e '.[test]'
	$(PYTHON) -m pip install -q --no-deps $(WAN22)

lint:
	$(PYTHON) -m ruff check .

# The C++ CPU kernels timed against the torch references (pytest-benchmark): a table per op whose
# rows are relative to its fastest, so the (x.xx) beside torch is how many times faster cpp is.
bench-cpu:
	$(PYTHON) -m pytest -q tests/kernels/test_bench_cpu.py --benchmark-enable \
		--benchmark-columns=min,median,rounds

test: install-test lint
	@$(PYTHON) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: run make test from the repository root"; fi; \
	exit $$rc
	@$(MAKE) --no-print-directory bench-cpu PYTHON=$(PYTHON)
