"""The layout rules: `platform/` never shadows the standard module; science imports no platform
libraries; the layers point one way (cli -> flows, dashboards, bench -> platform -> science; see LAYERS, BESIDE)."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from services import REPO

FORBIDDEN_IN_SCIENCE = {"prefect", "ray", "mlflow", "millivid_platform", "millivid_flows"}


def test_platform_folder_is_not_a_package():
    assert (REPO / "platform").is_dir()
    assert not (REPO / "platform" / "__init__.py").exists()


def test_stdlib_platform_wins_from_repo_root():
    code = "import platform, torch, ray, mlflow; import millivid_platform.settings as s; print(platform.__file__); print(s.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    stdlib_file, ours = out.split()
    assert "site-packages" not in stdlib_file and stdlib_file.endswith("platform.py")
    assert not stdlib_file.startswith(str(REPO))
    assert ours.startswith(str(REPO / "platform"))


def imported_modules(path: Path, module_strings: bool = False) -> list[str]:
    """The modules `path` imports (absolute imports); with `module_strings`, also the module names
    in its string constants (docstrings aside): a whole string that is a dotted name (what
    `import_module("x.y")` is given), and a dotted path or entrypoint inside a longer string or an
    f-string part (`"python -m x.y"`, `"x.y:flow"`, `f"x.{name}"`)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif (module_strings and isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            names += [node.value] if MODULE_NAME.fullmatch(node.value) else MODULE_PATH.findall(node.value)
    return names


def platform_imports(paths) -> list[str]:
    """'file: module' for every import of a FORBIDDEN_IN_SCIENCE module in `paths`."""
    return [f"{path.relative_to(REPO)}: {name}" for path in paths for name in imported_modules(path, module_strings=True)
            if name.split(".")[0] in FORBIDDEN_IN_SCIENCE]


# The project's packages by layer, bottom up: a package imports only the layers below its own
# (issue 17: cli -> flows -> platform -> science, with dashboards and bench beside flows).
LAYERS = (("millivid",), ("millivid_platform",), ("millivid_flows", "millivid_dashboards", "millivid_bench"), ("millivid_cli",))
# Imports inside a layer, each with its reason; dashboards import neither flows nor bench.
BESIDE = {
    ("millivid_flows", "millivid_dashboards"): "the pipeline's report stage builds the dashboards' site",
    ("millivid_bench", "millivid_flows"): "benchmarks time the pipeline's flows",
    ("millivid_bench", "millivid_dashboards"): "benchmarks time building and loading the site",
}
PACKAGES = [package for layer in LAYERS for package in layer]


def allowed_imports(package: str) -> set[str]:
    """The project packages `package` may import: the layers below its own, and BESIDE's entries."""
    level = next(index for index, layer in enumerate(LAYERS) if package in layer)
    below = {other for layer in LAYERS[:level] for other in layer}
    return below | {other for (importer, other) in BESIDE if importer == package}


MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.\w+)*")
MODULE_PATH = re.compile(r"\b([A-Za-z_]\w*)[.:]")  # the package of a dotted path or `module:attr` inside a string

SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
FOLDERS: dict[str, str] = SETUPTOOLS["package-dir"]  # each of the project's packages -> its folder


def test_every_package_has_a_layer():
    assert sorted(PACKAGES) == sorted(FOLDERS)  # a new package is placed in LAYERS, or the layering check misses it


def project_references(path: Path) -> set[str]:
    """The project packages a module imports, or names as a module to run or import (`-m x`,
    `importlib.import_module("x.y")`): string constants that are a project module's dotted name."""
    return {name.split(".")[0] for name in imported_modules(path, module_strings=True)} & set(PACKAGES)


def test_every_layer_imports_only_the_layers_below_it():
    offenders = []
    for package in PACKAGES:
        for path in sorted((REPO / FOLDERS[package]).rglob("*.py")):
            offenders += [f"{path.relative_to(REPO)} -> {other}"
                          for other in project_references(path) - allowed_imports(package) - {package}]
    assert offenders == []


def test_imports_beside_flows_point_one_way():
    """No package imports a neighbour that imports it (directly or through another neighbour)."""
    reaches = {package: allowed_imports(package) for package in PACKAGES}
    for _ in PACKAGES:  # the transitive closure
        reaches = {package: others.union(*(reaches[other] for other in others)) for package, others in reaches.items()}
    assert [package for package, others in reaches.items() if package in others] == []
    assert not allowed_imports("millivid_dashboards") & {"millivid_flows", "millivid_bench"}


def test_the_layering_check_sees_imports_and_module_names(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('import millivid_flows.pipeline\nfrom millivid_cli.main import main\nrun = ["-m", "millivid_bench.gpu"]\n'
                      'text = "millivid_flows is a package"\n')
    assert project_references(module) == {"millivid_flows", "millivid_cli", "millivid_bench"}
    for hidden in ('"python -m millivid_flows.serve"', '"millivid_flows.pipeline:pipeline"', 'f"millivid_flows.{name}"'):
        module.write_text(f'"""Docstrings may name millivid_cli.main."""\nname = "x"\nrun = {hidden}\n')
        assert project_references(module) == {"millivid_flows"}, hidden


def test_science_package_imports_no_platform_libraries():
    assert platform_imports((REPO / "millivid").rglob("*.py")) == []


def test_headline_bench_imports_no_platform_libraries():
    """It runs on a bare GPU machine (tests/test_bench_headline.py also checks what running it imports)."""
    assert platform_imports([REPO / "bench" / "headline.py", REPO / "bench" / "gpu.py"]) == []


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(SETUPTOOLS["packages"])
    for name, folder in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            dotted = ".".join([name, *relative.parts]) if relative.parts else name
            assert dotted in listed, f"{dotted} ({init.parent}) is missing from pyproject's packages"


@pytest.mark.integration
def test_ray_task_from_repo_root_imports_torch(ray_session, monkeypatch):
    monkeypatch.chdir(REPO)

    def versions():
        import platform as std

        import torch

        return torch.__version__, std.system()

    torch_version, system = ray_session.get(ray_session.remote(versions).remote())
    assert torch_version.startswith("2.14.1") and system == "Linux"
