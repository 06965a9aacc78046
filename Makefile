# Two entry points (see README): `make demo` runs the pipeline end to end on the embedded
# stack, `make test` runs the test suite. Both create and update the virtualenv first.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean-workspace

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/millivid pipeline --config smoke $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check millivid platform flows bench dashboards tests

clean-workspace:
	rm -rf workspace
