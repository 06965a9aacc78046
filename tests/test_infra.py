"""infra/ checked offline: the variables the manifests set are settings the code reads, versions and
ports match what the project runs and tests, every published port is on the loopback."""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterator
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement
from services import REPO

from millivid_platform.object_store import ObjectStoreSettings
from millivid_platform.settings import PlatformSettings

INFRA = REPO / "infra"
# Read by the libraries themselves (Ray, MLflow's server, MinIO, PostgreSQL, Prefect's server, botocore)
LIBRARY_VARIABLES = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "AWS_ACCESS_KEY_ID",
                     "AWS_SECRET_ACCESS_KEY", "POSTGRES_USER", "POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
                     "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_UI_API_URL",
                     *ObjectStoreSettings().boto_environment()}


def setting_names(model) -> set[str]:
    names = set()
    prefix = model.model_config.get("env_prefix", "")
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else [f"{prefix}{name}"])
        names |= {choice.upper() for choice in choices}
    return names


SETTINGS = setting_names(PlatformSettings) | setting_names(ObjectStoreSettings)


def load(path: str) -> dict:
    return yaml.safe_load((INFRA / path).read_text())


def k8s_containers() -> list[dict]:
    spec = load("k8s/raycluster.yaml")["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [container for group in groups for container in group["template"]["spec"]["containers"]]


def test_the_settings_the_code_reads_are_the_ones_the_tests_use():
    assert {"MILLIVID_STORAGE_ROOT", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "AWS_ENDPOINT_URL",
            "MILLIVID_OBJECT_STORE_MAX_ATTEMPTS"} <= SETTINGS


def test_kuberay_cluster_sets_only_known_variables_and_runs_the_installed_ray():
    manifest = load("k8s/raycluster.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["spec"]["rayVersion"] == metadata.version("ray")
    for container in k8s_containers():
        names = {entry["name"] for entry in container["env"]}
        assert names <= SETTINGS | LIBRARY_VARIABLES, names - SETTINGS - LIBRARY_VARIABLES
        assert {"MILLIVID_STORAGE_ROOT", "MLFLOW_TRACKING_URI"} <= names  # every node shares them
        storage = next(entry["value"] for entry in container["env"] if entry["name"] == "MILLIVID_STORAGE_ROOT")
        assert storage.startswith("s3://")  # never a path that exists on one node only
        assert container["image"] == f"registry.internal/millivid:{project_version()}"  # the code the driver runs
        env = {entry["name"]: entry for entry in container["env"]}
        if env["RAY_AUTH_MODE"]["value"] == "token":  # every node gets the one token, from a Secret (never inline)
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "millivid-ray-token", "key": "auth_token"}
    head = k8s_containers()[0]
    assert {port["containerPort"] for port in head["ports"]} >= {6379}
    assert manifest["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the head only schedules


def test_compose_services_pin_the_installed_versions_and_publish_on_the_loopback_only():
    services = load("services/compose.yaml")["services"]
    assert services["mlflow"]["image"].endswith(f":v{metadata.version('mlflow')}")
    assert services["prefect"]["image"].startswith(f"prefecthq/prefect:{metadata.version('prefect')}-python3.11")
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
        names = set(service.get("environment", {}))
        assert names <= SETTINGS | LIBRARY_VARIABLES, (name, names - SETTINGS - LIBRARY_VARIABLES)
    command = services["mlflow"]["command"]
    cluster_extra = {Requirement(text).name: Requirement(text).specifier
                     for text in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cluster"]}
    for package in ("psycopg2-binary", "boto3"):  # what the image lacks, installed at start: exact, and what the project allows
        pinned = re.search(rf"\b{re.escape(package)}==([\w.]+)", command)
        assert pinned and pinned.group(1) in cluster_extra[package], (package, command)
    assert "--backend-store-uri postgresql+psycopg2://" in command  # the driver the tests use (local_cluster.Postgres)
    assert "--artifacts-destination s3://" in command
    databases = set(re.findall(r"CREATE DATABASE (\w+);", (INFRA / "services/init-databases.sql").read_text()))
    assert {"mlflow", "prefect"} <= databases
    assert re.search(r"@postgres/mlflow\b", command)
    assert services["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("@postgres/prefect")


def test_ray_cluster_file_joins_workers_to_the_head_port_and_installs_the_cluster_extra():
    cluster = load("ray/cluster.yaml")
    head_port = re.search(r"--port=(\d+)", " ".join(cluster["head_start_ray_commands"])).group(1)
    assert f"--address=$RAY_HEAD_IP:{head_port}" in " ".join(cluster["worker_start_ray_commands"])
    setup = " ".join(cluster["setup_commands"])
    assert ".[cluster]" in setup
    exported = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", setup))
    assert exported - {"PATH"} <= SETTINGS, exported - SETTINGS
    assert cluster["head_node_type"] in cluster["available_node_types"]
    if "RAY_AUTH_MODE=token" in " ".join(cluster["head_start_ray_commands"]):  # the token reaches every node
        assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def images(node) -> Iterator[str]:
    """Every `image:` value anywhere in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from images(value)
    elif isinstance(node, list):
        for item in node:
            yield from images(item)


def image_tag(image: str) -> str | None:
    """The tag of `registry/name:tag` (None when untagged; a registry's `:port` is not a tag)."""
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else None


def names_a_version(image: str) -> bool:
    """A digest (`name@sha256:...`), or a tag with a version number in it (not `latest`, `stable`, `main`)."""
    return "@sha256:" in image or bool(re.search(r"\d", image_tag(image) or ""))


def test_every_image_in_infra_names_a_version():
    """Versioned images only (docs/operations.md "Upgrades"): an untagged or `:latest` image changes
    under a running deployment when a node or a container restarts and pulls it again."""
    found = {}
    for path in sorted(INFRA.rglob("*.y*ml")):
        for image in images(yaml.safe_load(path.read_text())):
            found[image] = path.relative_to(REPO)
    assert len(found) >= 5, found  # the services and the KubeRay image
    unpinned = {image: str(path) for image, path in found.items() if not names_a_version(image)}
    assert not unpinned, f"images without a version (untagged or :latest): {unpinned}"


def test_an_untagged_or_latest_image_is_refused():
    refused = ["registry.internal:5000/millivid", "minio/minio:latest", "postgres", "postgres:stable", "millivid:main"]
    accepted = ["postgres:16", "ghcr.io/mlflow/mlflow:v3.17.2", "registry.internal:5000/millivid:0.1.0", "millivid@sha256:ab12"]
    assert [names_a_version(image) for image in refused + accepted] == [False] * 5 + [True] * 4


def test_compose_runs_the_postgresql_and_the_retry_settings_the_tests_use(monkeypatch):
    from millivid_platform.local_cluster import postgres_bin

    monkeypatch.delenv("MILLIVID_OBJECT_STORE_MAX_ATTEMPTS", raising=False)  # compose has the default budget

    services = load("services/compose.yaml")["services"]
    try:
        tested = subprocess.run([str(postgres_bin() / "postgres"), "--version"], capture_output=True, text=True,
                                check=True).stdout.split()[2]
    except FileNotFoundError:
        pytest.skip("no PostgreSQL server installed here to compare with")
    pinned = image_tag(services["postgres"]["image"])
    assert re.fullmatch(r"\d+\.\d+", pinned) and pinned.split(".")[0] == tested.split(".")[0], (pinned, tested)  # a minor release of the tested major
    mlflow_env = services["mlflow"]["environment"]
    assert {key: str(mlflow_env[key]) for key in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS")} == ObjectStoreSettings().boto_environment()


def test_ray_workers_get_what_they_need_to_reach_the_services(monkeypatch):
    """Rank 0 logs to MLflow and every rank reads and writes the object store: the driver's settings
    for both, credentials for an authenticating proxy included, travel to the workers."""
    from millivid_platform.compute import worker_env

    given = {"MLFLOW_TRACKING_URI": "https://mlflow.internal", "MLFLOW_TRACKING_TOKEN": "t0ken",
             "MILLIVID_STORAGE_ROOT": "s3://bucket/storage", "AWS_ENDPOINT_URL": "http://minio.internal:9000",
             "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "MILLIVID_OBJECT_STORE_MAX_ATTEMPTS": "7"}
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("UNRELATED_SECRET", "no")
    env = worker_env()
    assert given.items() <= env.items() and "UNRELATED_SECRET" not in env
