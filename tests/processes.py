"""Helpers for tests that look at real processes: a process tree, and where its sockets listen (`ss`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def listening(pids: list[int]) -> list[tuple[str, str]]:
    """(local address, process name) of every TCP socket the processes listen on, from `ss -ltnpH`."""
    wanted = set(pids)
    found = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & wanted:
            name = re.search(r'\(\("([^"]*)"', line)
            found.append((line.split()[3], name.group(1) if name else "?"))
    return found


def beyond_loopback(sockets: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The sockets of `listening()` reachable from other machines (any address but the loopback's)."""
    return [(address, name) for address, name in sockets if address.rsplit(":", 1)[0].strip("[]") not in LOOPBACK]


def stop_group(process: subprocess.Popen, grace: float = 60.0) -> None:
    """SIGTERM a process started with `start_new_session=True` and everything it started; SIGKILL
    what is still there after `grace` seconds (a Prefect worker finishing its shutdown on a busy
    machine can take longer)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
