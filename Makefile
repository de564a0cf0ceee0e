# Sluice: `make run` for a local dashboard with demo brokers, `make test` for
# lint, types and the test suite against real brokers. No activation needed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test check clean

run: $(VENV)/.installed
	$(PY) -m dashboard.devservices run

# Lint and types first: they need no services and fail fast.
test: check
	$(PY) -m dashboard.devservices test -- $(VENV)/bin/pytest -q -p no:cacheprovider --durations=25

check: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

clean:
	rm -rf .sluice

$(PY):
	@$(PYTHON) -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null || { \
		echo "Sluice needs Python 3.11 or newer; $(PYTHON) is: $$($(PYTHON) --version 2>&1)." >&2; \
		echo "Run with another one, e.g. make PYTHON=python3.12 $(MAKECMDGOALS)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) || { \
		echo "Could not create $(VENV); on Debian: apt-get install python3-venv" >&2; exit 1; }

# Reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@ $(VENV)/.installed
