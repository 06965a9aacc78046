"""Helpers for tests that start real services: free ports, health waits, `millivid ui`, a browser page."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

MILLIVID = str(Path(sys.executable).parent / "millivid")
VIEWPORT = {"width": 1500, "height": 1000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, f"exited with {process.returncode} before {url} answered"
        with contextlib.suppress(OSError):
            fetch(url, timeout=2.0)
            return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


@contextlib.contextmanager
def millivid_ui(env: dict[str, str], port: int) -> Iterator[str]:
    """`millivid ui --port PORT` as a user runs it; yields the address it prints, stops it afterwards."""
    process = subprocess.Popen([MILLIVID, "ui", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        first = process.stdout.readline()
        assert first.startswith(f"MLflow UI: http://127.0.0.1:{port} "), first
        url = first.split()[2]
        wait_until_up(f"{url}/health", process)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the server and the workers it started
        process.wait(timeout=30)


@contextlib.contextmanager
def browser_page() -> Iterator[object]:
    """A Playwright page in headless Chromium (Debian's), at a fixed viewport."""
    import pytest

    from millivid_dashboards.browser import chromium, chromium_path

    if chromium_path() is None:
        if os.environ.get("MILLIVID_REQUIRE_BROWSER"):
            pytest.fail("chromium is required for the browser checks (apt-get install -y chromium)")
        pytest.skip("chromium not installed (CI installs it)")
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(300_000)  # MLflow's and Prefect's UIs render slowly on 2 busy cores
        yield page


def hide_mlflow_assistant(page) -> None:
    """MLflow 3 opens its assistant panel beside every page; the screenshots are of the runs."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()
