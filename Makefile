# Two entry points (see README): `make demo` runs the pipeline end to end on the embedded
# stack, `make test` runs the test suite. Both create and update the virtualenv first.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv browser clean-workspace

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/millivid pipeline --config smoke $(ARGS)

# The stack test's browser check drives Debian's Chromium (installed here when missing and
# when this user may install packages; the test skips without it unless MILLIVID_REQUIRE_BROWSER).
browser:
	@command -v chromium >/dev/null || { apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; } || \
		echo "note: chromium not installed; the browser check will be skipped"

# Two test processes (pytest-xdist), each taking a whole test file at a time: the integration tests
# spend much of their time waiting on process start-ups (Ray, Prefect, MLflow), and a file's module
# fixtures (a Ray cluster, a pipeline workspace) are made once, in one process; so is the session's
# smoke workspace (tests/conftest.py gives its files to one process, and the slowest files first).
# `make test TEST_WORKERS=0` runs everything in this process.
TEST_WORKERS ?= 2

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check millivid platform flows bench dashboards cli tests

clean-workspace:
	rm -rf workspace
