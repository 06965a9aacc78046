"""Fréchet Video Distance: I3D features of 16-frame chunks, one distance per chunk index.

The I3D network loads as TorchScript from a configured path or fsspec URI. Where it is absent,
FVD is reported unavailable with the reason.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from millivid import storage


class I3DUnavailable(RuntimeError):
    pass


def i3d_status(uri: str | None) -> dict[str, Any]:
    if not uri:
        return {"available": False, "uri": None, "reason": "eval.i3d_uri is not set"}
    try:
        found = storage.exists(uri)
    except Exception as err:  # any fsspec driver error: report, don't crash the doctor
        return {"available": False, "uri": uri, "reason": f"cannot check {uri}: {err}"}
    if not found:
        return {"available": False, "uri": uri, "reason": f"no file at {uri}"}
    return {"available": True, "uri": uri, "reason": "found"}


def load_i3d(uri: str | None, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load the TorchScript I3D feature network from a path or fsspec URI."""
    status = i3d_status(uri)
    if not status["available"]:
        raise I3DUnavailable(f"FVD unavailable: {status['reason']}")
    try:
        module = torch.jit.load(io.BytesIO(storage.read_bytes(uri)), map_location=device)
    except Exception as err:
        raise I3DUnavailable(f"FVD unavailable: {uri} is not a loadable TorchScript module ({err})") from err
    return module.eval()
