# The two commands a new user runs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vaequery demo --out out/demo

test: $(STAMP)
	$(VENV)/bin/ruff check vaequery tests benchmarks
	$(PY) -m pytest -q -n 2 --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check vaequery tests benchmarks
	$(VENV)/bin/ruff format --check vaequery tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/gaussian_throughput.py

clean:
	rm -rf $(VENV) out .pytest_cache
