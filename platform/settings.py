"""Where the platform's services and data live: one explicit settings object.

Embedded defaults need nothing started by hand: a workspace folder holds the MLflow SQLite
store, MLflow artifacts, Prefect's ephemeral database and the data; Ray starts locally.
Standard environment variables switch each piece to a real service with no code change:

    MLFLOW_TRACKING_URI   -> an MLflow server (http://...) or another store
    PREFECT_API_URL       -> a Prefect server
    RAY_ADDRESS           -> a Ray cluster (ray://... or host:port)
    MILLIVID_STORAGE_ROOT -> any fsspec URI (s3://bucket/prefix, gs://..., memory://...);
                             an S3-compatible store other than AWS: AWS_ENDPOINT_URL (object_store.py)
    MILLIVID_WORKSPACE    -> the workspace folder (default ./workspace)
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from millivid_platform.object_store import ObjectStoreSettings, is_object_store


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MILLIVID_", frozen=True, extra="ignore")

    workspace: Path = Field(Path("workspace"), description="folder for the embedded stack's state")
    storage_root: str | None = Field(None, description="fsspec URI for data, latents and checkpoints")
    tracking_uri: str | None = Field(
        None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "MILLIVID_TRACKING_URI")
    )
    prefect_api_url: str | None = Field(
        None, validation_alias=AliasChoices("PREFECT_API_URL", "MILLIVID_PREFECT_API_URL")
    )
    ray_address: str | None = Field(None, validation_alias=AliasChoices("RAY_ADDRESS", "MILLIVID_RAY_ADDRESS"))
    num_cpus: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="CPUs of a local Ray")
    experiment: str = Field("millivid", description="MLflow experiment name")
    stack_mlflow_port: int = Field(5050, description="port of the local stack's MLflow server (5000 is often taken)")
    stack_prefect_port: int = Field(4200, description="port of the local stack's Prefect server")
    stack_ray_port: int = Field(6379, description="GCS port of the local stack's Ray head")

    @field_validator("workspace")
    @classmethod
    def _absolute(cls, workspace: Path) -> Path:
        # Ray Train workers chdir into a session folder: relative paths would point elsewhere there.
        return workspace.expanduser().resolve()

    @property
    def resolved_storage_root(self) -> str:
        return self.storage_root or str(self.workspace / "storage")

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.workspace / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        """Default artifact location of experiments the embedded store creates."""
        return (self.workspace / "mlartifacts").as_uri()

    @property
    def prefect_home(self) -> Path:
        return self.workspace / "prefect"

    @property
    def uses_local_ray(self) -> bool:
        return not self.ray_address

    def setup_lock(self, timeout: float = 600.0):
        """A file lock for creating the workspace's stores (MLflow's database, Prefect's): two first
        runs in a new workspace would otherwise both create and migrate them, and one would crash."""
        from filelock import FileLock

        locks = self.workspace / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / "workspace-setup.lock"), timeout=timeout)

    def describe(self) -> dict[str, str]:
        return {
            "workspace": str(self.workspace),
            "storage_root": self.resolved_storage_root,
            "tracking_uri": self.resolved_tracking_uri,
            "prefect_api": self.prefect_api_url or f"ephemeral (PREFECT_HOME={self.prefect_home})",
            "ray_address": self.ray_address or f"local (num_cpus={self.num_cpus})",
        }

    def export_environment(self) -> None:
        """Point the libraries' own environment variables at these settings.

        Called once by entry points (CLI, flow servers) before Prefect is imported, because
        Prefect reads its settings at import time. Values set by the user are kept.
        """
        os.environ.setdefault("MLFLOW_TRACKING_URI", self.resolved_tracking_uri)
        if is_object_store(self.resolved_storage_root):
            ObjectStoreSettings().export_environment()
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_UI_ENABLED", "false" if not self.prefect_api_url else "true")
        if not self.prefect_api_url:
            os.environ.setdefault("PREFECT_HOME", str(self.prefect_home))
        self.workspace.mkdir(parents=True, exist_ok=True)


def load_settings(**overrides: object) -> PlatformSettings:
    return PlatformSettings(**overrides)
