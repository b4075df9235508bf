# Two commands do everything: `make book` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
NOTEBOOKS := $(wildcard notebooks/*.py)
EXECUTED := $(patsubst notebooks/%.py,book/%.ipynb,$(NOTEBOOKS))
MATHJAX := book/_mathjax/mathjax/tex-chtml.js

.PHONY: book html test nb lint clean install mathjax

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

# Execute every notebook on profile $(PROFILE) (default: cpu), then build the HTML book.
book: $(EXECUTED)
	$(MAKE) html

# One notebook: `make nb NB=machinery PROFILE=smoke PARAMS="-y '{seeds: [0, 1, 2]}'"`.
nb: install
	$(BIN)/jupytext --to ipynb --output book/$(NB).ipynb notebooks/$(NB).py
	$(BIN)/papermill book/$(NB).ipynb book/$(NB).ipynb --cwd book -p profile $(PROFILE) $(PARAMS)

book/%.ipynb: notebooks/%.py opai_lib/*.py $(VENV)/.installed
	$(MAKE) nb NB=$*

html: install mathjax
	$(BIN)/jupyter-book build book --config $(CURDIR)/_config.yml --toc $(CURDIR)/book/_toc.yml \
		--path-output $(CURDIR)/book -W --keep-going

test: install mathjax
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf book/_build
