"""How `make test` splits the suite over its test processes (tests/conftest.py, pytest-xdist)."""

from __future__ import annotations

import pytest
from conftest import SMOKE_WORKSPACE_FILES, work_unit


def test_the_files_on_the_smoke_workspace_are_one_unit_and_every_other_file_its_own():
    units = {work_unit(f"tests/{name}::test_x[a-b]") for name in SMOKE_WORKSPACE_FILES}
    assert units == {"smoke_workspace"}
    assert work_unit("tests/test_pipeline.py::test_smoke_pipeline_end_to_end") == "tests/test_pipeline.py"
    assert work_unit("tests/test_cli_commands_extra.py::test_y") == "tests/test_cli_commands_extra.py"


def test_the_listed_files_are_the_ones_whose_tests_use_the_smoke_workspace(request: pytest.FixtureRequest):
    """The other direction of the collection-time check: no file listed that no longer uses it."""
    using = {item.path.name for item in request.session.items if "smoke_workspace" in item.fixturenames}
    collected = {item.path.name for item in request.session.items}
    assert using == SMOKE_WORKSPACE_FILES & collected
