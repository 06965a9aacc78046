"""Pictures of reconstructions: ground truth next to the frame decoded from each latent level.

    reconstruction_grid(truth, reconstructions)     # plain PNG grid, for every evaluation
    comparison_figure(models, frames)               # labelled PNG: the paper's token-budget figure,
                                                    # hierarchical vs downscaled, level by level
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from einops import rearrange
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from millivid.ae.evaluate import level_reconstructions
from millivid.ae.frames import to_numpy, to_tensor
from millivid.ae.model import HierarchicalAutoencoder
from millivid.images import grid, png_bytes

MIN_PICTURE_SIDE = 96  # tiny frames are enlarged by pixel repetition to at least this many pixels


def reconstruction_grid(truth: np.ndarray, reconstructions: np.ndarray) -> bytes:
    """truth: (n h w 3) uint8, reconstructions: (levels n h w 3) uint8 -> PNG, one row per frame:
    ground truth, then the reconstruction from level 0 (finest), 1, ..."""
    columns = np.concatenate([truth[None], reconstructions])
    scale = max(1, -(-MIN_PICTURE_SIDE // truth.shape[1]))
    return png_bytes(grid(rearrange(columns, "cols rows h w c -> rows cols h w c")), scale=scale)


def comparison_figure(models: Mapping[str, HierarchicalAutoencoder], frames: np.ndarray) -> bytes:
    """frames: (n h w 3) uint8 -> labelled PNG; rows: each frame under each model; columns: ground
    truth, then decoding from each level with its tokens per frame."""
    geometry = next(iter(models.values())).geometry
    truth = to_tensor(frames)
    reconstructions = {name: to_numpy(level_reconstructions(model, truth)) for name, model in models.items()}
    titles = ["ground truth"] + [f"level {level}\n{tokens} tokens" for level, tokens in enumerate(geometry.tokens_per_level)]
    rows = [(index, name) for index in range(len(frames)) for name in models]
    figure = Figure(figsize=(1.4 * len(titles), 1.4 * len(rows) + 0.4), layout="constrained")
    axes = figure.subplots(len(rows), len(titles), squeeze=False)
    for row, (index, name) in enumerate(rows):
        pictures = [frames[index]] + list(reconstructions[name][:, index])
        for column, picture in enumerate(pictures):
            axis = axes[row, column]
            axis.imshow(picture, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[column], fontsize=8)
        axes[row, 0].set_ylabel(f"#{index} {name}", fontsize=7)
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()

