# pirloop: `make demo` runs the main job, `make test` runs the tests. Both set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install demo serve test lint format bench screenshots compose-check clean

# The virtual environment, rebuilt when pyproject.toml changes. torch==2.14.1 and
# torchvision==0.29.1 (the worker extra) install from this machine's local wheel cache.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[worker,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/pirloop demo $(ARGS)

serve: install
	$(BIN)/pirloop serve $(ARGS)

lint: install
	$(BIN)/ruff check app worker tests bench migrations
	$(BIN)/ruff format --check app worker tests bench migrations
	$(BIN)/mypy app worker

format: install
	$(BIN)/ruff format app worker tests bench migrations
	$(BIN)/ruff check --fix app worker tests bench migrations

# The browser tests (tests/pages, marker `browser`) drive Debian's chromium at /usr/bin/chromium
# and install it with `apt-get install chromium` (as root) when it is missing; leave them out
# with ARGS='-m "not browser"'.
test: install lint
	@test -x /usr/bin/chromium || echo "make test: /usr/bin/chromium is missing; the browser" \
		"tests will install it with apt-get (as root). Skip them: make test ARGS='-m \"not browser\"'"
	$(PY) -m pytest -q $(ARGS)

# docs/screenshots/*.png from a fresh cpu-medium service after one demo cycle (about 20 minutes
# on 2 cores; ARGS=--no-cycle: traffic only, under a minute). Needs /usr/bin/chromium.
screenshots: install
	$(PY) -m bench.screenshots $(ARGS)

# Boots docker-compose.yml for real (engine, stand-in base images from Debian packages when no
# registry answers, project images, the stack) and runs one learning cycle inside it, then tears
# it all down. Opt-in: about 15-25 minutes and ~8 GB of images on 2 cores; needs root.
compose-check: install
	$(PY) -m bench.compose_check $(ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
