"""The S3-compatible object store behind an `s3://` storage root: endpoint, retries, one clear error.

Three clients talk to it: fsspec's s3fs (the science code's reads and writes, Ray Train's
checkpoints), boto3 inside MLflow (artifacts) and botocore under both. They all read the standard
AWS variables, so the endpoint is `AWS_ENDPOINT_URL` (unset: AWS itself) and credentials are the
usual `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`.

Requests are retried by botocore's "standard" retry mode under every client, with our budget:
`MILLIVID_OBJECT_STORE_MAX_ATTEMPTS` attempts per request, the first one included, and
`MILLIVID_OBJECT_STORE_CONNECT_TIMEOUT` seconds per connection attempt. Before retry k botocore
waits rand(0, 1) * min(2 ** (k - 1), 20) s ("full jitter": the bound doubles, each wait is random
below it), so the default 5 attempts ride out a store that refuses connections for 7.5 s on
average, 15 s at most. (s3fs adds a few retries of its own around timeouts and response bodies
that break off; a store that refuses connections is retried by botocore alone.)
When the budget is spent, `ObjectStoreUnavailable` names the endpoint, the URI and the settings.
tests/test_object_store.py stops and restarts a real S3 server (moto) to check both outcomes.

Nothing half-written: an object appears only once its PUT (or multipart upload) completes, and
`millivid.storage.atomic_open` writes straight to the final key there, so a writer that dies
half-way leaves no object (an unfinished multipart upload, invisible to readers, stays until the
bucket's lifecycle rule aborts it), and a block that raises inside `atomic_open` discards its
upload (`millivid.storage.object_upload`: fsspec's autocommit=False, commit() or discard()).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

OBJECT_STORE_SCHEMES = ("s3://", "s3a://")
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"
# What Ray workers need to reach the store: they get these from the driver (compute.worker_env).
WORKER_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                    "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "FSSPEC_S3", "MILLIVID_OBJECT_STORE_MAX_ATTEMPTS",
                    "MILLIVID_OBJECT_STORE_CONNECT_TIMEOUT")


class ObjectStoreUnavailable(ConnectionError):
    """The object store did not answer within the retry budget (an OSError: the CLI prints its message alone)."""


class ObjectStoreSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices(ENDPOINT_VARIABLE, "MLFLOW_S3_ENDPOINT_URL"),
        description="S3-compatible endpoint (MinIO, moto, ...); unset: AWS",
    )
    max_attempts: int = Field(5, ge=1, validation_alias="MILLIVID_OBJECT_STORE_MAX_ATTEMPTS",
                              description="attempts per request, with exponential backoff in between")
    connect_timeout: float = Field(5.0, gt=0, validation_alias="MILLIVID_OBJECT_STORE_CONNECT_TIMEOUT",
                                   description="seconds per connection attempt")

    def s3fs_options(self) -> dict[str, object]:
        """s3fs's options: the endpoint and botocore's retry config. `total_max_attempts` counts the
        first try, like AWS_MAX_ATTEMPTS (boto3's); botocore's `max_attempts` would count retries only."""
        options: dict[str, object] = {"config_kwargs": {
            "connect_timeout": self.connect_timeout,
            "retries": {"total_max_attempts": self.max_attempts, "mode": "standard"},
        }}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        return options

    def export_environment(self) -> None:
        """Make every S3 client of this process and of the Ray workers use this endpoint and budget.

        fsspec takes defaults per protocol from `FSSPEC_S3` (JSON) when it is imported, which is
        how Ray workers get them; in this process fsspec may be imported already, so its config is
        set too. boto3 (MLflow's artifact client) reads the AWS_* retry variables.
        """
        import fsspec.config

        options = self.s3fs_options()
        os.environ["FSSPEC_S3"] = json.dumps(options)
        fsspec.config.conf["s3"] = {**fsspec.config.conf.get("s3", {}), **options}
        os.environ.update(self.boto_environment())

    def boto_environment(self) -> dict[str, str]:
        """boto3's retry variables for this budget: for this process's MLflow client, and for the MLflow
        server, whose own S3 client writes the artifacts it proxies (infra/services/compose.yaml)."""
        return {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": str(self.max_attempts)}

    def describe(self) -> str:
        return self.endpoint_url or "AWS S3"


def is_object_store(uri: str) -> bool:
    return uri.startswith(OBJECT_STORE_SCHEMES)


@contextlib.contextmanager
def diagnosed(uri: str) -> Iterator[None]:
    """Turn "could not connect" after the whole retry budget into one error that says what to check."""
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    started = time.monotonic()
    try:
        yield
    except (EndpointConnectionError, ConnectTimeoutError) as err:
        settings = ObjectStoreSettings()
        raise ObjectStoreUnavailable(
            f"the object store at {settings.describe()} ({ENDPOINT_VARIABLE}) did not answer for {uri} "
            f"after {settings.max_attempts} attempts over {time.monotonic() - started:.0f} s "
            f"(MILLIVID_OBJECT_STORE_MAX_ATTEMPTS); check that it is up and that {ENDPOINT_VARIABLE} and "
            f"MILLIVID_STORAGE_ROOT name it ({err})"
        ) from err


def check_reachable(root: str) -> None:
    """Before a pipeline starts: list the storage root's bucket, so a store that is down fails in
    seconds with `ObjectStoreUnavailable`, a bucket that is not there with FileNotFoundError and
    missing or refused credentials with PermissionError, each naming the root and what to check,
    instead of deep inside a stage."""
    if not is_object_store(root):
        return
    from botocore.exceptions import NoCredentialsError

    from millivid.storage import filesystem

    store = f"the object store at {ObjectStoreSettings().describe()} ({ENDPOINT_VARIABLE})"
    with diagnosed(root):
        fs, path = filesystem(root)
        bucket = path.split("/", 1)[0]
        try:
            fs.ls(bucket, refresh=True)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"MILLIVID_STORAGE_ROOT={root}: bucket {bucket!r} does not exist on {store}; "
                f"create it, or name an existing one ({err})"
            ) from err
        except (NoCredentialsError, PermissionError) as err:
            raise PermissionError(
                f"MILLIVID_STORAGE_ROOT={root}: {store} refused to list bucket {bucket!r}; check AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY (or the machine's role) and that they may list and write it ({err})"
            ) from err
