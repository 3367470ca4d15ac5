# LabelLoop developer entry points. `make demo` and `make test` work on a fresh machine with
# Python 3.11+, node and npm: they create/refresh .venv and node_modules idempotently first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQ_HASH := $(shell cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-12)
NODE_HASH := $(shell cat package.json package-lock.json 2>/dev/null | sha256sum | cut -c1-12)
VENV_STAMP := $(VENV)/.stamp-$(REQ_HASH)
NODE_STAMP := node_modules/.stamp-$(NODE_HASH)
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.stamp-$(shell cat requirements-checkov.txt | sha256sum | cut -c1-12)
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup test test-fast demo synth lint bench load clean

help:
	@echo "make demo   - run the whole pipeline on generated images in the in-process emulation"
	@echo "make test-fast - unit, handler and CLI tests in parallel (under a minute; for the edit-test loop)"
	@echo "make test   - unit, handler, infra (synth + cfn-lint + cdk-nag) and e2e tests, in parallel"
	@echo "make synth  - cdk synth with the pinned CDK CLI (writes cdk.out/)"
	@echo "make lint   - ruff + mypy"
	@echo "make bench  - benchmarks (JSON)"
	@echo "make load   - the 5,000-image load test (10 datasets dropped at once; not part of make test)"

$(VENV_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "LabelLoop needs Python 3.11+")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@echo "$(CURDIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/labelloop-paths.pth"
	@echo "$(CURDIR)/lambdas" >> "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/labelloop-paths.pth"
	@rm -f $(VENV)/.stamp-*
	@touch $@

$(NODE_STAMP): package.json
	npm ci --no-audit --no-fund --loglevel=error
	@rm -f node_modules/.stamp-*
	@touch $@

# checkov pins boto3/packaging against requirements.txt: it gets a virtual environment of its own.
$(CHECKOV_STAMP): requirements-checkov.txt
	@test -x $(CHECKOV_VENV)/bin/pip || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@rm -f $(CHECKOV_VENV)/.stamp-*
	@touch $@

setup: $(VENV_STAMP) $(NODE_STAMP) $(CHECKOV_STAMP)

# One xdist worker per core; the suite's scheduler (pytest_xdist_make_scheduler in tests/conftest.py)
# keeps each e2e module, and all Label Studio tests, on one worker so their fixtures start once.
PYTEST_PARALLEL := -n $(shell nproc 2>/dev/null || echo 2) --dist loadscope
# Tests keep compiled bytecode (and pytest's rewritten test modules) in .build/pycache, outside the
# source folders: a second run skips recompiling about 400 modules per worker.
PYTEST := env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(CURDIR)/.build/pycache $(PY) -m pytest

test: setup
	$(PYTEST) -q $(PYTEST_PARALLEL) --durations=25

# No synthesis, no emulation: the unit, handler and CLI tests that are not marked e2e or slow.
test-fast: $(VENV_STAMP)
	$(PYTEST) -q $(PYTEST_PARALLEL) -m "not e2e and not slow and not load"

demo: setup
	$(VENV)/bin/labelloop demo --out demo-out

synth: setup
	npx --no-install cdk synth --quiet
	@ls -1 cdk.out/*.template.json

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy lambdas infra sandbox cli

# Each benchmark's JSON goes to stdout and to bench-out/; the README's scale table is computed from two of them.
bench: setup
	@mkdir -p bench-out
	@set -o pipefail; for b in bench/bench_*.py; do \
		n=$$(basename $$b .py); args=""; \
		[ $$n = bench_counters ] && args="200"; \
		[ $$n = bench_export_shards ] && args="--images 10000 --moto-shard-size 0"; \
		echo "== $$b $$args"; PYTHONPATH=.:lambdas $(PY) $$b $$args | tee bench-out/$$n.json || exit 1; \
	done
	@echo "== bench/scale_table.py (the README's scale and cost table)"
	@$(PY) bench/scale_table.py bench-out/bench_counters.json bench-out/bench_export_shards.json > bench-out/scale_table.json

load: setup
	$(PYTEST) -q -x --durations=1 -m load tests/e2e

clean:
	rm -rf cdk.out .build .pytest_cache .mypy_cache .ruff_cache
