# Two commands do everything: `make book` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
NOTEBOOKS := $(wildcard notebooks/*.py)
MATHJAX := book/_mathjax/mathjax/tex-chtml.js

N ?= 3

.PHONY: book html test nb lint clean install mathjax verify record

install: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt -e .
	touch $@

# MathJax served locally, so the book renders formulas offline.
mathjax: $(MATHJAX)
$(MATHJAX):
	npm install --silent --no-audit --no-fund --prefix $(VENV)/npm mathjax@3.2.2
	mkdir -p book/_mathjax/mathjax
	cp -r $(VENV)/npm/node_modules/mathjax/es5/. book/_mathjax/mathjax/

# Execute every notebook on profile $(PROFILE) (default: cpu) into book/, then build the
# HTML book. Runs already in the published record (book/record/cpu) are read back; the
# study's chapters train no missing run unless COMPUTE=True (hours on a CPU: run sweeps
# with `python -m opai_lib sweep` instead), they show what the record holds.
COMPUTE ?= False
book: install
	for nb in $(patsubst notebooks/%.py,%,$(NOTEBOOKS)); do \
	  if grep -q '^compute: bool' notebooks/$$nb.py; then p="-p compute $(COMPUTE)"; else p=""; fi; \
	  $(MAKE) nb NB=$$nb OUT=book PARAMS="$$p $(PARAMS)" || exit 1; done
	$(MAKE) html

# One notebook, executed into $(OUT): `make nb NB=machinery PROFILE=smoke PARAMS="-y '{seeds:
# [0, 1, 2]}'"`. A reader's re-run goes beside the book (runs/notebooks, git-ignored), never
# over its pages; `make book` (OUT=book) alone writes book/.
OUT ?= runs/notebooks
nb: install
	mkdir -p $(OUT)
	$(BIN)/jupytext --to ipynb --output $(OUT)/$(NB).ipynb notebooks/$(NB).py
	$(BIN)/papermill $(OUT)/$(NB).ipynb $(OUT)/$(NB).ipynb --cwd book -p profile $(PROFILE) $(PARAMS)
	$(BIN)/python -m opai_lib fold $(OUT)/$(NB).ipynb
	@echo "executed: $(OUT)/$(NB).ipynb (profile $(PROFILE) $(PARAMS))"

# Re-run N random records of a published store (STORE: book/record/cpu, the study's runs;
# book/record/cpu-lessons or book/record/cpu-anatomy, the chapters' experiments) and compare.
# MASKS=1: choose the masks of every run again (of N random ones if N is given), no training.
STORE ?= book/record/cpu
verify: install
	$(BIN)/python -m opai_lib verify $(if $(MASKS),--masks $(if $(filter command line,$(origin N)),--n $(N)),--n $(N)) --store $(STORE)

# Recompute the runs of chapter NB into an empty store (runs/record/NB), then set them
# beside the published record. Publish by copying the new records into book/record/cpu.
record: install
	rm -rf runs/record/$(NB)
	mkdir -p runs/record/$(NB)
	$(BIN)/jupytext --to ipynb --output runs/record/$(NB)/$(NB).ipynb notebooks/$(NB).py
	OPAI_RUNS_DIR=$(CURDIR)/runs/record/$(NB) $(BIN)/papermill runs/record/$(NB)/$(NB).ipynb \
		runs/record/$(NB)/$(NB).ipynb --cwd book -p profile cpu $(PARAMS)
	$(BIN)/python -m opai_lib compare runs/record/$(NB)/cpu

html: install mathjax
	$(BIN)/jupyter-book build book --config $(CURDIR)/_config.yml --toc $(CURDIR)/book/_toc.yml \
		--path-output $(CURDIR)/book -W --keep-going

test: install mathjax
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf book/_build
