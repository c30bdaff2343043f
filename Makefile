# Encore: `make run` starts the product on embedded defaults; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run test lint format typecheck pytest bench bench-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ".[test]"
	touch $@ $(VENV)/.installed-run

# The first run prints the demo accounts' passwords, also kept in var/demo-credentials.txt
# (with the default settings); later runs print where that file is.
run: $(VENV)/.installed-run
	$(BIN)/encore db upgrade
	$(BIN)/encore demo --if-empty
	$(BIN)/encore serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

pytest: $(VENV)/.installed-test
	$(BIN)/pytest -n 2 --dist loadfile

test: lint typecheck pytest

# Benchmarks need a load generator from Debian's packages.
bench-deps:
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v ffmpeg >/dev/null || (apt-get update -qq && apt-get install -y -qq ffmpeg)

# The media edge tests (tests/integration/streaming/test_edge.py) need nginx.
.PHONY: edge-deps
edge-deps:
	test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx)

# The Spark training engine (`encore recommend train --engine spark`, its test) needs Java.
.PHONY: spark-deps
spark-deps:
	command -v java >/dev/null || (apt-get update -qq && apt-get install -y -qq default-jre-headless)

bench: $(VENV)/.installed-test bench-deps edge-deps
	$(BIN)/python -m bench.catalog_api
	$(BIN)/python -m bench.import_scan
	$(BIN)/python -m bench.token_verify
	$(BIN)/python -m bench.transcode
	$(BIN)/python -m bench.playback_start
	$(BIN)/python -m bench.segments
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.search
	$(BIN)/python -m bench.recommend
	$(BIN)/python -m bench.analytics

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
