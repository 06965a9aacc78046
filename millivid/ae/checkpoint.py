"""Autoencoder checkpoints: a plain dict (format tag, config JSON, frame size, state dict) that
`torch.load(..., weights_only=True)` reads back, written atomically to any fsspec URI.

    save_autoencoder(model, "s3://bucket/ae.pt")
    model = load_autoencoder("s3://bucket/ae.pt")
"""

from __future__ import annotations

import io
from typing import Any

import torch
from pydantic import ValidationError

from millivid import storage
from millivid.ae.config import AutoencoderModelConfig
from millivid.ae.model import HierarchicalAutoencoder, build_autoencoder

FORMAT = "millivid.autoencoder/1"


def autoencoder_state(model: HierarchicalAutoencoder) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "config": model.config.model_dump_json(),
        "size": model.size,
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
    }


def autoencoder_from_state(state: dict[str, Any], origin: str = "checkpoint") -> HierarchicalAutoencoder:
    """Rebuild a model from `autoencoder_state`'s dict; errors name `origin` (e.g. the file)."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{origin}: not a {FORMAT} checkpoint (format: {found!r})")
    try:
        config = AutoencoderModelConfig.model_validate_json(state["config"])
        model = build_autoencoder(config, int(state["size"]))
        model.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, ValueError, ValidationError, RuntimeError) as err:
        raise ValueError(f"{origin}: invalid autoencoder checkpoint: {err}") from err
    return model.eval()


def save_autoencoder(model: HierarchicalAutoencoder, uri: str) -> None:
    buffer = io.BytesIO()
    torch.save(autoencoder_state(model), buffer)
    storage.write_bytes(uri, buffer.getvalue())


def load_autoencoder(uri: str, device: torch.device | str = "cpu") -> HierarchicalAutoencoder:
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{uri}: no autoencoder checkpoint there") from err
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign files raise many different unpickling errors
        raise ValueError(f"{uri}: not a readable autoencoder checkpoint ({type(err).__name__}: {err})") from err
    return autoencoder_from_state(state, origin=uri).to(device)
