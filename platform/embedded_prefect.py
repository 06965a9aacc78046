"""Prefect's temporary API server (runs without PREFECT_API_URL), tied to the process that needs it.

Prefect starts that server as a child process on the first flow call and stops it when the
process exits normally; a driver killed with SIGKILL never gets there, and the server would run
for good. So flow commands start it first, under the workspace set-up lock (it creates and
migrates the workspace's Prefect database, which two first runs would otherwise do at once),
after a watchdog process that stops it once the driver is gone:

    start(settings)   # then call flows; Prefect reuses this server

`python -m millivid_platform.embedded_prefect DRIVER_PID` is the watchdog. It finds the server by
the driver's pid in its environment (`DRIVER_VARIABLE`), which also covers a driver killed while
the server was still starting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from millivid_platform.settings import PlatformSettings
from millivid_platform.stack import alive, command_line

SERVER_APP = "prefect.server.api.server:create_app"  # in the command line of Prefect's temporary server
DRIVER_VARIABLE = "MILLIVID_PREFECT_DRIVER"  # the server inherits the driver's environment, this too
POLL_SECONDS = 1.0
STOP_SECONDS = 5.0
# Prefect's default (20 s) is too short on a loaded laptop: at load 6 on 2 cores it took longer.
STARTUP_SECONDS = 120


def start(settings: PlatformSettings) -> None:
    """Start the temporary server now, watched, unless flows go to a real server (or a test harness's)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as STARTUP_TIMEOUT

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    server = SubprocessASGIServer()  # one per process: the instance Prefect's client then uses
    if server.server_process is not None:
        return
    subprocess.Popen(
        [sys.executable, "-m", __name__, str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives signals sent to the driver's process group, to clean up after them
    )
    os.environ[DRIVER_VARIABLE] = str(os.getpid())
    with settings.setup_lock(), startup_budget(STARTUP_TIMEOUT):
        try:
            server.start()
        except RuntimeError as err:  # Prefect's "Timed out while attempting to connect to ephemeral Prefect API server"
            if "Timed out" not in str(err):
                raise
            # TimeoutError is an OSError: the command line prints it as one `error:` line
            raise TimeoutError(
                f"Prefect's temporary server did not start within {STARTUP_TIMEOUT.value()} s (a busy machine?): "
                f"set {STARTUP_TIMEOUT.name} higher, or run against a server (`millivid stack up`)") from None


def startup_budget(setting) -> contextlib.AbstractContextManager:
    """STARTUP_SECONDS for the server to come up, unless the user set Prefect's own `setting`."""
    from prefect.settings import temporary_settings

    if setting.name in os.environ:
        return contextlib.nullcontext()
    return temporary_settings(updates={setting: STARTUP_SECONDS})


def watch(driver: int) -> None:
    """Once `driver` (this process's parent) has gone, stop the Prefect servers it started."""
    while os.getppid() == driver:  # a dead driver's children are re-parented, this one too
        time.sleep(POLL_SECONDS)
    servers = servers_of(driver)
    deadline = time.time() + STOP_SECONDS
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        while any(alive(pid) for pid in servers) and time.time() < deadline:
            time.sleep(0.1)
        servers = [pid for pid in servers if alive(pid)]


def servers_of(driver: int) -> list[int]:
    marker = f"{DRIVER_VARIABLE}={driver}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and SERVER_APP in command_line(int(entry.name)):
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


if __name__ == "__main__":
    watch(int(sys.argv[1]))
