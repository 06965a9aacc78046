"""The layout rules: `platform/` never shadows the standard module; science imports no platform libs."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_SCIENCE = {"prefect", "ray", "mlflow", "millivid_platform", "millivid_flows"}


def test_platform_folder_is_not_a_package():
    assert (ROOT / "platform").is_dir()
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_wins_from_repo_root():
    code = "import platform, torch, ray, mlflow; import millivid_platform.settings as s; print(platform.__file__); print(s.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    stdlib_file, ours = out.split()
    assert "site-packages" not in stdlib_file and stdlib_file.endswith("platform.py")
    assert not stdlib_file.startswith(str(ROOT))
    assert ours.startswith(str(ROOT / "platform"))


def platform_imports(paths) -> list[str]:
    """'file: module' for every import of a FORBIDDEN_IN_SCIENCE module in `paths`."""
    offenders = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_IN_SCIENCE]
    return offenders


def test_science_package_imports_no_platform_libraries():
    assert platform_imports((ROOT / "millivid").rglob("*.py")) == []


def test_headline_bench_imports_no_platform_libraries():
    """It runs on a bare GPU machine (tests/test_bench_headline.py also checks what running it imports)."""
    assert platform_imports([ROOT / "bench" / "headline.py", ROOT / "bench" / "gpu.py"]) == []


def test_every_package_folder_is_listed_in_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(project["packages"])
    folders = {v: k for k, v in project["package-dir"].items()}
    for folder, name in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            dotted = ".".join([name, *relative.parts]) if relative.parts else name
            assert dotted in listed, f"{dotted} ({init.parent}) is missing from pyproject's packages"


@pytest.mark.integration
def test_ray_task_from_repo_root_imports_torch(ray_session, monkeypatch):
    monkeypatch.chdir(ROOT)

    def versions():
        import platform as std

        import torch

        return torch.__version__, std.system()

    torch_version, system = ray_session.get(ray_session.remote(versions).remote())
    assert torch_version.startswith("2.14.1") and system == "Linux"
