# Déclic — the README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install demo test lint unit e2e bench tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Debian's docker-compose validates docker-compose.yml in the tests (no Docker engine needed);
# headless Chromium opens the HTML report in its test.
tools:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -q docker-compose >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null)); \
	  else echo "docker-compose is missing: run 'sudo apt-get install docker-compose'"; exit 1; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); \
	  else echo "chromium is missing (the HTML report test opens it): run 'sudo apt-get install chromium'"; exit 1; fi; }

demo: install
	$(BIN)/declic demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Two test processes: most of the suite waits on real workers and services, not on the CPU.
# The fault scenarios stay in one of them (their xdist_group), one after the other.
PYTEST_PROCESSES ?= 2

test: install tools lint
	$(BIN)/pytest -n $(PYTEST_PROCESSES) --dist loadgroup

unit: install
	$(BIN)/pytest -n $(PYTEST_PROCESSES) tests/unit

e2e: install
	$(BIN)/pytest -n $(PYTEST_PROCESSES) --dist loadgroup tests/e2e

bench: install
	$(BIN)/declic bench

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
