"""A multi-node set-up on one machine, as the tests and `millivid bench scale` start it: Ray nodes
(`ray start`, each with its own CPUs and temp dir), an S3-compatible server (moto, from the `dev`
extra), PostgreSQL in a throwaway folder, an MLflow server on it with artifacts on S3 and a Prefect
server on it.

`LocalCluster` is all of it at once, as both start it; the functions below start one piece each.
Every process runs in its own process group and is stopped by it. Ray nodes take distinct
loopback addresses (127.0.0.2, 127.0.0.3, ...): Ray keeps a node on 127.0.0.1 only in its
single-machine mode, which refuses to add a second node; with any other address its GCS and
raylets listen on every interface (see docs/operations.md), everything else binds the loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

from millivid_platform.object_store import ObjectStoreSettings

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path
    temp: Path | None = None  # a folder of its own, removed once it has stopped (a Ray node's --temp-dir)
    grace: float = 30.0  # seconds between SIGTERM and SIGKILL

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after `grace` seconds; then its temp folder goes."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30.0)
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def start(name: str, command: list[str], folder: Path, env: dict[str, str] | None = None) -> Process:
    log = folder / f"{name}.log"
    with log.open("w") as output:  # the child keeps its own copy of the descriptor
        popen = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, **(env or {})})
    return Process(name, popen, log)


def wait_for(ready, process: Process, what: str, timeout: float = 180.0) -> None:
    """Return once `ready()` is true; if `process` exits first or `timeout` s pass, stop it (its
    caller never gets hold of it) and raise with the end of its log."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.popen.poll() is not None:
            process.stop()
            raise RuntimeError(f"{process.name} exited ({process.popen.returncode}) before {what}:\n{process.tail()}")
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(0.5)
    process.stop()
    raise TimeoutError(f"{process.name}: no {what} within {timeout:.0f} s:\n{process.tail()}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2.0) as response:
        return response.status == 200


def tcp_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=2.0):
        return True


@dataclass
class ObjectStore:
    endpoint: str
    process: Process
    folder: Path  # where its log goes

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def environment(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint, **S3_CREDENTIALS}

    def make_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials()).create_bucket(Bucket=name)

    def stop(self) -> None:
        """Stop the server: from now on its endpoint refuses connections, as a store that is down."""
        self.process.stop()

    def start_again(self) -> None:
        """A new server on the same endpoint, once it accepts connections. moto keeps objects in
        memory, so it starts empty: no bucket, no object, no unfinished upload of the old one."""
        self.process = object_store(self.folder, self.port).process


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"]}


def object_store(folder: Path, port: int | None = None) -> ObjectStore:
    """moto's S3 server on 127.0.0.1 (it keeps objects in memory: stopping it loses them)."""
    port = port or free_port()
    process = start("moto", [str(BIN / "moto_server"), "-H", HOST, "-p", str(port)], folder)
    endpoint = f"http://{HOST}:{port}"
    wait_for(lambda: tcp_open(HOST, port), process, "S3 endpoint")
    return ObjectStore(endpoint, process, folder)


def postgres_bin() -> Path:
    """PostgreSQL's server programs: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent  # Debian links only some of them onto PATH
    versions = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise FileNotFoundError("PostgreSQL's pg_ctl is not installed (apt-get install postgresql)")
    return Path(versions[-1]).parent


@dataclass
class Postgres:
    data: Path
    port: int
    bin: Path
    as_owner: list[str]

    def uri(self, database: str, driver: str = "psycopg2") -> str:
        """SQLAlchemy URL of `database`: psycopg2 for MLflow (SQLAlchemy 2.1 defaults to psycopg 3),
        asyncpg for Prefect's server."""
        return f"postgresql+{driver}://millivid@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        subprocess.run([str(self.bin / "createdb"), "-h", HOST, "-p", str(self.port), "-U", "millivid", name],
                       check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        subprocess.run([*self.as_owner, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)
        if self.as_owner:
            shutil.rmtree(self.data.parent, ignore_errors=True)


def postgres(folder: Path) -> Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port (trust auth: loopback only).

    PostgreSQL refuses to run as root: as root, the cluster lives in a new folder owned by the
    `postgres` user and its programs run as that user.
    """
    pg_bin, port = postgres_bin(), free_port()
    as_owner: list[str] = []
    if os.geteuid() == 0:
        folder = Path(tempfile.mkdtemp(prefix="millivid-postgres-"))
        shutil.chown(folder, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data = folder / "pgdata"
    subprocess.run([*as_owner, str(pg_bin / "initdb"), "-D", str(data), "-U", "millivid", "-A", "trust", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_owner, str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"), "-w", "-t", "120",
                    "-o", f"-h {HOST} -p {port} -k {folder} -c fsync=off", "start"], check=True, capture_output=True, timeout=180)
    return Postgres(data, port, pg_bin, as_owner)


def mlflow_server(folder: Path, store_uri: str, artifacts: str, env: dict[str, str],
                  port: int | None = None) -> tuple[str, Process]:
    """An MLflow server over `store_uri` proxying artifacts to `artifacts` (e.g. s3://bucket/mlartifacts),
    on `port` (a free one by default); returns its URL once it answers /health."""
    port = port or free_port()
    process = start("mlflow", [str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(port), "--backend-store-uri",
                               store_uri, "--artifacts-destination", artifacts, "--workers", "1"], folder,
                    {**env, **ObjectStoreSettings().boto_environment(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://{HOST}:{port}"
    wait_for(lambda: http_ok(f"{url}/health"), process, "health answer", timeout=300)
    return url, process


def prefect_server(folder: Path, database_uri: str, port: int | None = None) -> tuple[str, Process]:
    """A Prefect server on 127.0.0.1 over `database_uri` (postgresql+asyncpg://..., as
    infra/services/compose.yaml runs it), its home in `folder`; returns its API URL once it is healthy."""
    port = port or free_port()
    process = start("prefect", [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(port)], folder,
                    {"PREFECT_HOME": str(folder / "prefect-home"), "PREFECT_API_URL": "",
                     "PREFECT_API_DATABASE_CONNECTION_URL": database_uri, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "PREFECT_UI_ENABLED": "false"})
    api = f"http://{HOST}:{port}/api"
    wait_for(lambda: http_ok(f"{api}/health"), process, "health answer", timeout=300)
    return api, process


def ray_environment() -> dict[str, str]:
    """What every process of the cluster (nodes, drivers) needs: the cluster mode of Ray, token auth."""
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "token"}


def ray_node(folder: Path, name: str, ip: str, num_cpus: float, head_address: str | None = None,
             port: int | None = None, env: dict[str, str] | None = None) -> Process:
    """`ray start --block` for a head (no `head_address`) or a node joining it; blocks until it is in the cluster.

    `--block` keeps `ray start` as the parent of the node's processes, so the process group holds
    them all and a dead raylet makes it stop the rest of the node (as on a lost machine).
    """
    # its own sockets, logs and session files; short, as Unix socket paths under it are limited to 107 bytes
    temp = Path(tempfile.mkdtemp(prefix=f"ray-{name}-"))
    command = [str(BIN / "ray"), "start", "--block", "--node-ip-address", ip, "--num-cpus", str(num_cpus),
               "--temp-dir", str(temp), "--disable-usage-stats"]
    if head_address is None:
        command += ["--head", "--port", str(port or free_port()), "--include-dashboard", "false"]
    else:
        command += ["--address", head_address]
    process = start(f"ray-{name}", command, folder, {**ray_environment(), **(env or {})})
    # a head told to stop drains for up to 30 s, waiting for nodes and drivers that are gone already
    process.temp, process.grace = temp, 5.0
    wait_for(lambda: "Ray runtime started" in process.tail(100_000), process, "node start", timeout=240)
    return process


def raylet_pid(node: Process) -> int:
    """The raylet of a node `ray_node` started (a child of its `ray start --block`)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if stat.split("(", 1)[1].split(")", 1)[0] == "raylet" and int(stat.rsplit(")", 1)[1].split()[1]) == node.popen.pid:
                    return int(entry.name)
    raise LookupError(f"no raylet under {node.name} (pid {node.popen.pid})")


@dataclass
class LocalCluster:
    """The whole multi-node set-up (tests/test_scale.py, `millivid bench scale`): moto S3 with
    `bucket`, PostgreSQL and an MLflow server on it (artifacts in s3://bucket/mlartifacts), a Ray
    head on `head_ip` and a second node on `node_ip` with `node_cpus` CPUs each. Its logs and
    PostgreSQL's data go to `folder`; `stop()` stops whatever was started, last first."""

    folder: Path
    bucket: str
    head_ip: str
    node_ip: str
    node_cpus: float = 1
    store: ObjectStore | None = None
    postgres: Postgres | None = None
    mlflow: Process | None = None
    head: Process | None = None
    node: Process | None = None
    mlflow_port: int = field(default_factory=free_port)
    head_port: int = field(default_factory=free_port)

    @property
    def storage_root(self) -> str:
        return f"s3://{self.bucket}/storage"

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def ray_address(self) -> str:
        return f"{self.head_ip}:{self.head_port}"

    def start(self) -> LocalCluster:
        """Everything: the object store, then tracking and Ray. On an error, what started is stopped again."""
        try:
            self.start_object_store()
            self.start_tracking_and_ray()
        except BaseException:
            self.stop()
            raise
        return self

    def start_tracking_and_ray(self) -> None:
        """PostgreSQL with MLflow, and the Ray nodes, side by side (each takes tens of seconds on 2
        busy cores); the object store must be up (MLflow's artifacts go there)."""
        with ThreadPoolExecutor(2) as pool:
            started = [pool.submit(self.start_tracking), pool.submit(self.start_ray)]
        for future in started:
            future.result()  # raises the first start's error

    def start_object_store(self) -> None:
        self.store = object_store(self.folder)
        self.store.make_bucket(self.bucket)

    def start_tracking(self) -> None:
        self.postgres = postgres(self.folder)
        self.postgres.create_database("mlflow")
        self.start_mlflow()

    def start_mlflow(self) -> None:
        """The MLflow server, always on `mlflow_port` (so a restart keeps its URI)."""
        _, self.mlflow = mlflow_server(self.folder, self.postgres.uri("mlflow"), f"s3://{self.bucket}/mlartifacts",
                                       self.store.environment(), port=self.mlflow_port)

    def start_ray(self) -> None:
        self.head = ray_node(self.folder, "head", self.head_ip, self.node_cpus, port=self.head_port)
        self.node = ray_node(self.folder, "node", self.node_ip, self.node_cpus, head_address=self.ray_address)

    def environment(self) -> dict[str, str]:
        """The settings a driver or a Prefect worker needs to run the pipeline on this cluster
        (the same names as on a real one: docs/operations.md); its workspace is in `folder`."""
        return {**self.store.environment(), **ray_environment(), "RAY_ADDRESS": self.ray_address,
                "MLFLOW_TRACKING_URI": self.tracking_uri, "MILLIVID_STORAGE_ROOT": self.storage_root,
                "MILLIVID_WORKSPACE": str(self.folder / "workspace")}

    def replace_node(self, name: str) -> None:
        """A new machine named `name` in place of the second node (what an autoscaler or a restarted
        VM does); stopping the old node's `ray start` stops whatever is left of it."""
        self.node.stop()
        self.node = ray_node(self.folder, name, self.node_ip, self.node_cpus, head_address=self.ray_address)

    def restart_mlflow(self, down_seconds: float) -> None:
        """Stop the MLflow server, wait `down_seconds`, start it again on the same port and store;
        returns once it answers."""
        self.mlflow.stop()
        time.sleep(down_seconds)
        self.start_mlflow()

    def client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri)

    def stop(self) -> None:
        """Stop every process started, last first; each stop runs even if an earlier one failed."""
        for piece in (self.node, self.head, self.mlflow, self.postgres, self.store):
            if piece is not None:
                with contextlib.suppress(Exception):  # one that fails to stop must not leave the rest running
                    piece.stop()
