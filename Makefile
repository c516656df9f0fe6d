# SafeView: `make demo` and `make test` work on a fresh machine with only Python 3.11.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test bench demo-models demo-images clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/safeview scan demo/images --models demo,default --out demo-out --force || [ $$? -eq 1 ]  # 1: something is unsafe, as expected
	@echo "Open demo-out/report.html to review the results."

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/cse.py

# Re-create the committed demo models (not part of `make demo`, which never retrains):
# synthetic benchmark at seed 0, one small CNN per category, test accuracy stored in each checkpoint.
DEMO_DATA   ?= build/demo-data
DEMO_EPOCHS ?= 16
DEMO_SIZE   ?= 128
demo-models: setup
	$(VENV)/bin/safeview synth $(DEMO_DATA) --n 6000 --seed 0 --force
	for c in sexual cyberbullying self_harm; do \
	  $(VENV)/bin/safeview train $(DEMO_DATA)/$$c --category $$c --out src/safeview/data/models/demo_$$c.safeview \
	    --epochs $(DEMO_EPOCHS) --patience 4 --image-size $(DEMO_SIZE) --seed 0 --force || exit 1; \
	done

# Re-create the bundled demo images (benign photos, some with synthetic stand-ins).
demo-images: setup
	$(PY) demo/make_images.py demo/images

clean:
	rm -rf $(VENV) demo-out bench/out .pytest_cache
