"""A trained rollout model as one file: the DiT's weights, its schedule and where its latents live.

    save_rollout_model(model, RolloutModelInfo(...), uri)
    model, info = load_rollout_model(uri)
    schedule = info.schedule()

A plain dict of tensors and JSON-able values, loadable with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io

import torch
from pydantic import Field

from millivid import storage
from millivid.diffusion.config import DiTConfig
from millivid.diffusion.dit import DiT, build_dit
from millivid.diffusion.schedule import Schedule, build_schedule
from millivid.diffusion.schedules import ScheduleConfig
from millivid.schema import Frozen

FORMAT = "millivid-rollout-model/2"
# Format 1 was written while kind "millivid" meant a schedule whose levels lagged each other across
# chunks; read as format 2 its weights would meet the release's schedule silently.
RETIRED_FORMATS = {"millivid-rollout-model/1": "its millivid schedule is not the release's (levels lagged across chunks); retrain it"}


class RolloutModelInfo(Frozen):
    method: str = Field(min_length=1, description="the method's name in diffusion.methods")
    schedule_config: ScheduleConfig
    model: DiTConfig
    tokens_per_level: tuple[int, ...]
    channels: int = Field(ge=1)
    autoencoder_uri: str = Field(description="the autoencoder whose latents the model was trained on")
    latents_uri: str = Field(description="the latent dataset it was trained on")
    dataset_uri: str = Field(description="the frame dataset those latents encode")

    def schedule(self) -> Schedule:
        return build_schedule(self.schedule_config, self.tokens_per_level, name=self.method)


def save_rollout_model(model: DiT, info: RolloutModelInfo, uri: str) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "info": info.model_dump(mode="json"), "state_dict": model.state_dict()}, buffer)
    storage.write_bytes(uri, buffer.getvalue())


def load_rollout_model(uri: str, device: torch.device | str = "cpu") -> tuple[DiT, RolloutModelInfo]:
    try:
        state = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{uri}: no rollout model there") from None
    except Exception as err:
        raise ValueError(f"{uri}: not a readable rollout model (torch.load: {type(err).__name__}: {err})") from None
    found = state.get("format") if isinstance(state, dict) else None
    if found in RETIRED_FORMATS:
        raise ValueError(f"{uri}: a rollout model of retired format {found!r}: {RETIRED_FORMATS[found]}")
    if found != FORMAT:
        raise ValueError(f"{uri}: not a rollout model (expected format {FORMAT!r})")
    info = RolloutModelInfo.model_validate(state["info"])
    schedule = info.schedule()
    model = build_dit(info.model, info.channels, info.tokens_per_level, schedule.context_source)
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), info
