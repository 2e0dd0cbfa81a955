# Two commands do everything: `make demo` (the main job) and `make test` (the suite);
# `make bench` compares procflow with SpiffWorkflow and prints the speed floors.
# Each creates .venv and installs the project with its dev tools on first use.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo demo-distributed test bench bench-million bench-store setup lint clean

setup: $(VENV)/.setup-stamp
	sh scripts/ensure_asyncapi_specs.sh $(VENV)/npm

$(VENV)/.setup-stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	sh scripts/ensure_graphviz.sh
	sh scripts/ensure_browser.sh
	touch $@

demo: setup
	$(BIN)/procflow demo --out out/demo

# mypy checks the package as installed (a non-editable copy), not the source folders:
# the folders map onto `procflow.*` only through the installation.
lint: setup
	$(BIN)/ruff check .
	rm -rf build/lib build/typecheck  # setuptools would reuse a stale build/lib (build/npm holds bpmn-js)
	$(BIN)/python -m pip install --quiet --no-deps --target build/typecheck .
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p procflow

# Two pytest workers (pytest-xdist): the suite is mostly waiting on processes, PostgreSQL and
# RabbitMQ, so two halves take about 70% of one run. The broker's tests share one worker
# (tests/conftest.py), since one of them stops the broker for a while.
test: setup lint
	$(BIN)/python scripts/regen_diagrams.py --check
	$(BIN)/pytest -n 2 --dist loadgroup

# Two workers on PostgreSQL, the demo participants on RabbitMQ, 100 orders (see README).
demo-distributed: setup
	$(BIN)/python scripts/demo_distributed.py

# Printed, not asserted: a shared machine's figures drift (see bench/README.md).
bench: setup
	$(BIN)/python bench/compare.py --quick
	$(BIN)/python bench/amqp_bench.py
	$(BIN)/python bench/foreach_bench.py --quick

# A store of 1,000,000 parked instances (about 2 GB of SQLite, minutes to build): its own
# target, so `make bench` stays short. Prints open, tick and first-page times on both stores.
bench-million: setup
	$(BIN)/python bench/million.py --postgres $${PROCFLOW_TEST_POSTGRES:-postgresql://postgres@127.0.0.1:5432/test}

# The durable stores (SQLite and PostgreSQL on 127.0.0.1:5432) and issue 13's floors: a few minutes.
bench-store: setup
	$(BIN)/python bench/store_bench.py --quick

clean:
	rm -rf $(VENV) out build dist *.egg-info
