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

# Re-create the committed demo models (not part of `make demo`, which never retrains): per category,
# 10,000 synthetic images of the `train` recipe at seed 0 (backgrounds from the photos the models are
# never measured on are left out; bare backgrounds and the other categories' objects are negatives),
# one small CNN each, test accuracy stored in each checkpoint, then the false-alarm rate on the
# held-out real photos measured and recorded. The cyberbullying gesture is the hardest stand-in: its
# accuracy was still rising at the end of the first schedule (0.88), so it continues from its own
# weights for two more one-cycle schedules at a third of the learning rate (6, then 8 epochs; same
# seed, so the same held-out split); then, because a model that learned skin-toned hands also
# answered to faces (the evidence protected regions keep, issue 16), for 6 epochs more on 10,000
# new images of the `train_faces` recipe (seed 1: drawn faces among the negatives). The self-harm model,
# which answered to a real orange dahlia (warm petals edged in red), continues the same way for 6 epochs
# on 10,000 images of the `train_petals` recipe (seed 2: drawn flower heads among the negatives).
DEMO_DATA   ?= build/demo-data
DEMO_N      ?= 30000
DEMO_EPOCHS ?= 10
DEMO_SIZE   ?= 128
demo-models: setup
	for c in sexual cyberbullying self_harm; do \
	  $(VENV)/bin/safeview synth $(DEMO_DATA)-$$c --n $(DEMO_N) --seed 0 --recipe train --only $$c --force || exit 1; \
	  $(VENV)/bin/safeview train $(DEMO_DATA)-$$c/$$c --category $$c --out src/safeview/data/models/demo_$$c.safeview \
	    --epochs $(DEMO_EPOCHS) --patience 3 --image-size $(DEMO_SIZE) --seed 0 --force || exit 1; \
	  case $$c in cyberbullying) more="6 8";; *) more="";; esac; \
	  for e in $$more; do \
	    cp src/safeview/data/models/demo_$$c.safeview $(DEMO_DATA)-$$c/init.safeview || exit 1; \
	    $(VENV)/bin/safeview train $(DEMO_DATA)-$$c/$$c --category $$c --out src/safeview/data/models/demo_$$c.safeview \
	      --init $(DEMO_DATA)-$$c/init.safeview --epochs $$e --lr 0.001 --patience 3 --image-size $(DEMO_SIZE) --seed 0 --force || exit 1; \
	  done; \
	  case $$c in cyberbullying) hard="train_faces 1";; self_harm) hard="train_petals 2";; *) hard="";; esac; \
	  if [ -n "$$hard" ]; then \
	    set -- $$hard; \
	    $(VENV)/bin/safeview synth $(DEMO_DATA)-$$c-$$1 --n $(DEMO_N) --seed $$2 --recipe $$1 --only $$c --force || exit 1; \
	    cp src/safeview/data/models/demo_$$c.safeview $(DEMO_DATA)-$$c-$$1/init.safeview || exit 1; \
	    $(VENV)/bin/safeview train $(DEMO_DATA)-$$c-$$1/$$c --category $$c --out src/safeview/data/models/demo_$$c.safeview \
	      --init $(DEMO_DATA)-$$c-$$1/init.safeview --epochs 6 --lr 0.001 --patience 3 --image-size $(DEMO_SIZE) --seed 0 --force || exit 1; \
	  fi; \
	  $(VENV)/bin/safeview evaluate src/safeview/data/models/demo_$$c.safeview --real-photos --record || exit 1; \
	done

# Re-create the bundled demo images (benign photos, some with synthetic stand-ins).
demo-images: setup
	$(PY) demo/make_images.py demo/images

clean:
	rm -rf $(VENV) demo-out bench/out .pytest_cache
