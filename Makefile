# SafeView: `make demo` and `make test` work on a fresh machine with only Python 3.11.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/safeview scan demo/images --models demo,default --out demo-out --force
	@echo "Open demo-out/report.html to review the results."

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/cse.py

clean:
	rm -rf $(VENV) demo-out bench/out .pytest_cache
