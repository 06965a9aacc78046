"""The local stack: an MLflow server, a Prefect server, a Ray head and the served deployments.

Everything binds to 127.0.0.1 (Ray too: `compute.LOOPBACK_ONLY`) and keeps its data in the
workspace. `up` records each process id in `workspace/stack/state.json`; `down` stops exactly
those processes (their process groups).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from millivid_platform.compute import LOOPBACK_ONLY
from millivid_platform.settings import PlatformSettings

HOST = "127.0.0.1"
SERVED = "local"  # the name of every deployment the stack serves (`<flow>/local`)
PROGRESS_SECONDS = 10.0  # how often `up` says it is still waiting for a service
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    url: str  # what a person opens (or connects to)
    health: str  # an HTTP URL answering 200, or tcp://host:port
    env: dict[str, str]


@dataclass(frozen=True)
class Running:
    name: str
    pid: int
    url: str
    health: str
    log: str


def mlflow_service(settings: PlatformSettings, port: int | None = None, store: str | None = None) -> Service:
    """MLflow's server over a store (default: the workspace's): the stack's, and what `millivid ui` serves.

    Both kinds of runs in the workspace's store show their artifacts: embedded runs record `file://`
    URIs in the workspace, the stack's runs `mlflow-artifacts:/` ones, which this server maps to the same folder.
    """
    ws = settings.workspace
    port = port or settings.stack_mlflow_port
    url = f"http://{HOST}:{port}"
    return Service(
        "mlflow",
        [str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(port),
         "--backend-store-uri", store or f"sqlite:///{ws / 'mlflow.db'}",
         "--artifacts-destination", str(ws / "mlartifacts"), "--workers", "1"],
        url, f"{url}/health",
        {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no GenAI job workers: seven idle processes
    )


def services(settings: PlatformSettings, served_module: str) -> list[Service]:
    """MLflow, Prefect, a Ray head, and `python -m served_module` serving the deployments (the
    command line names it: the flows sit above the platform, which starts them without importing them)."""
    prefect_url = f"http://{HOST}:{settings.stack_prefect_port}"
    ray_address = f"{HOST}:{settings.stack_ray_port}"
    client_env = client_environment(settings)
    return [
        mlflow_service(settings),
        Service(
            "prefect",
            [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(settings.stack_prefect_port)],
            prefect_url, f"{prefect_url}/api/health",
            {"PREFECT_HOME": str(settings.prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "PREFECT_UI_ENABLED": "true", "PREFECT_API_URL": "", "PREFECT_SERVER_API_HOST": HOST,
             # the UI's scripts call this API: it must name the port actually served
             "PREFECT_SERVER_API_PORT": str(settings.stack_prefect_port), "PREFECT_UI_API_URL": f"{prefect_url}/api"},
        ),
        Service(
            "ray",
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", HOST, "--port",
             str(settings.stack_ray_port), "--num-cpus", str(settings.num_cpus), "--include-dashboard", "false",
             "--disable-usage-stats"],
            ray_address, f"tcp://{ray_address}", {"RAY_AUTH_MODE": "token", **LOOPBACK_ONLY},
        ),
        Service(
            "deployments",
            [sys.executable, "-m", served_module],
            f"{prefect_url}/deployments",
            f"{prefect_url}/api/deployments/name/nightly-regression/{SERVED}",  # served last
            client_env,
        ),
    ]


def client_environment(settings: PlatformSettings) -> dict[str, str]:
    """The variables that point the CLI, flows and workers at the running stack."""
    return {
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{settings.stack_mlflow_port}",
        "PREFECT_API_URL": f"http://{HOST}:{settings.stack_prefect_port}/api",
        "RAY_ADDRESS": f"{HOST}:{settings.stack_ray_port}",
        # the head's processes listen on loopback only; clients of it must be in the same mode
        **LOOPBACK_ONLY,
        # every client shows the token (~/.ray/auth_token, created on first start)
        "RAY_AUTH_MODE": "token",
        "MILLIVID_WORKSPACE": str(settings.workspace),
    }


def state_file(settings: PlatformSettings) -> Path:
    return settings.workspace / "stack" / "state.json"


def read_state(settings: PlatformSettings) -> list[Running]:
    path = state_file(settings)
    if not path.exists():
        return []
    return [Running(**entry) for entry in json.loads(path.read_text())]


def write_state(settings: PlatformSettings, running: list[Running]) -> None:
    path = state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in running], indent=2))
    tmp.replace(path)


def up(settings: PlatformSettings, served_module: str, timeout: float = 180.0, echo=print) -> list[Running]:
    """Start every service of `services(settings, served_module)` not already running; wait until each is healthy."""
    running = [r for r in read_state(settings) if alive(r.pid)]
    started = {r.name for r in running}
    logs = settings.workspace / "stack"
    logs.mkdir(parents=True, exist_ok=True)
    for service in services(settings, served_module):
        if service.name in started:
            echo(f"{service.name:>12}: already running (pid {next(r.pid for r in running if r.name == service.name)})")
            continue
        busy = port_in_use(service)
        if busy:
            raise RuntimeError(f"{service.name}: {busy} is already in use by another process; "
                               f"choose another port (MILLIVID_STACK_*_PORT) or stop that process")
        log_path = logs / f"{service.name}.log"
        env = {**os.environ, **service.env}
        env = {k: v for k, v in env.items() if v != ""}
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(service.command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                       cwd=settings.workspace, start_new_session=True)
        entry = Running(service.name, process.pid, service.url, service.health, str(log_path))
        running.append(entry)
        write_state(settings, running)
        echo(f"{service.name:>12}: starting (pid {process.pid}, log {log_path})")
        seconds = wait_healthy(entry, timeout, echo)
        echo(f"{service.name:>12}: ready after {seconds:.0f} s at {service.url}")
    return running


def status(settings: PlatformSettings) -> list[dict[str, object]]:
    return [
        {"name": r.name, "pid": r.pid, "url": r.url, "alive": alive(r.pid), "healthy": healthy(r.health), "log": r.log}
        for r in read_state(settings)
    ]


def down(settings: PlatformSettings, timeout: float = 30.0, echo=print) -> None:
    """Stop the processes `up` started, newest first: SIGTERM, then SIGKILL after `timeout`."""
    for entry in reversed(read_state(settings)):
        if alive(entry.pid):
            stop_group(entry.pid, timeout)
            echo(f"{entry.name:>12}: stopped (pid {entry.pid})")
        if entry.name == "ray":
            forget_ray_head(entry.url)
    state_file(settings).unlink(missing_ok=True)


def forget_ray_head(address: str) -> None:
    """`ray start` records its head for `address="auto"` in Ray's temp folder, and a head stopped by
    signal leaves the record behind; later local clusters' Ray Train placement-group cleaners would
    then look for the dead head and die with a GCS timeout."""
    from ray._common.utils import get_ray_address_file

    record = Path(get_ray_address_file(None))
    port = address.rsplit(":", 1)[-1]
    if record.exists() and record.read_text().strip().rsplit(":", 1)[-1] == port:  # Ray writes the node's own IP
        record.unlink(missing_ok=True)


def stop_group(pid: int, timeout: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline and group_alive(pid):
        time.sleep(0.2)
    if group_alive(pid):
        os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return any(alive(pid) for pid in _group_members(pgid))


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _zombie(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def healthy(health: str) -> bool:
    if health.startswith("tcp://"):
        host, port = health.removeprefix("tcp://").rsplit(":", 1)
        with socket.socket() as sock:
            sock.settimeout(1.0)
            return sock.connect_ex((host, int(port))) == 0
    try:
        with urllib.request.urlopen(health, timeout=2.0) as response:
            return response.status == 200
    except OSError:
        return False


def wait_healthy(entry: Running, timeout: float, echo=print) -> float:
    """Wait until `entry` answers its health check, saying every PROGRESS_SECONDS that it still
    waits; returns the seconds waited."""
    started = time.time()
    next_note = started + PROGRESS_SECONDS
    while time.time() < started + timeout:
        if not alive(entry.pid):
            raise RuntimeError(f"{entry.name} exited during start-up; see {entry.log}")
        if healthy(entry.health):
            return time.time() - started
        if time.time() >= next_note:
            echo(f"{entry.name:>12}: still starting after {time.time() - started:.0f} s (waiting for {entry.health})")
            next_note += PROGRESS_SECONDS
        time.sleep(0.5)
    raise RuntimeError(f"{entry.name} not healthy after {timeout:.0f}s at {entry.health}; see {entry.log}")


def port_in_use(service: Service) -> str | None:
    if service.name == "deployments":
        return None
    address = service.url.removeprefix("http://")
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return address if sock.connect_ex((host, int(port))) == 0 else None
