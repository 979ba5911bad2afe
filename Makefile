# The two commands of the README: `make demo` and `make test`. Each sets up .venv from
# nothing (Python >= 3.10 and pip are all it needs) and is safe to run again.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-quick docs venv dev redis postgres browser bench-ann bench-api clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed
dev: $(BIN)/.installed-dev

# make demo MUSIC=~/Music serves your own folder instead of generated clips
demo: venv
	$(BIN)/sonicsort demo $(if $(MUSIC),--music "$(MUSIC)")

redis:
	@bash scripts/ensure-redis.sh

# PostgreSQL for the tests of the shared catalog (Debian's package; the tests use a private database)
postgres:
	@bash scripts/ensure-postgres.sh

# Chromium for the browser tests (Debian's package; Playwright drives it, downloads nothing)
browser:
	@bash scripts/ensure-chromium.sh

test: dev redis postgres browser
	$(BIN)/python -m pytest

# the tests that need neither Redis nor Chromium, and no end-to-end processes (about 2 minutes)
test-quick: dev
	$(BIN)/python -m pytest -m "not redis and not browser and not slow"

# the docs site (mkdocs, strict: a broken link or a missing page fails) into site/
docs: dev
	$(BIN)/python scripts/docs_pages.py
	$(BIN)/mkdocs build --strict --site-dir site

bench-api: venv
	$(BIN)/python -m benchmarks.perf.api_load --data ../shared/data --servers 2x4,2x8,2x4:noanswers --out benchmarks/results/api-load.json

bench-ann: venv
	$(BIN)/sonicsort bench ann --dataset synthetic:100000:128 --out bench-results/100k

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache bench-results site docs/generated
