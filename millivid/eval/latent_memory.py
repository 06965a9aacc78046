"""Per-level latent memory: how close a candidate's latents of a revisit frame are to the true ones.

The paper's mechanism is that coarse levels carry the memory: when the camera comes back to a view
of the context, a method that remembers it generates coarse latents close to the true ones. This
is measured level by level in latent space, with no pretrained network: for level l and revisit
frame r, the mean squared error over tokens and channels between a candidate's level-l latent of
frame C + r and the true one.

Candidates are the methods that return their latents (a level the schedule does not denoise is
the generated finest frame re-encoded, flagged `derived`) and three latent references:

    copy_revisited   the true latents of the revisited context frame: the copy oracle, what
                     perfect memory of that frame scores (views are close, not identical)
    context_mean     the mean of the context frames' true latents: knows the context, no place
    random_frames    the true latents of the same window frame of the episode RandomFrames.donor
                     picks (the pixel random_frames reference's frames): a plausible frame of
                     another video

A method with memory has a coarse-level error below context_mean's and random_frames', approaching
copy_revisited's.

    references = reference_latents(window.latents, donor, revisit_of, context)   # name -> per level (R n_l c)
    table = candidate_rows("millivid", 3, generated, truth, revisit_of, within, derived=(1, 2))
    matrix = memory_matrix(table, "millivid", 2, examples=[0, 1, 2, 3], frames=R)  # (n R), NaN off revisits
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from einops import reduce, repeat

from millivid.eval.references import CONTEXT_MEAN, RANDOM_FRAMES
from millivid.eval.tables import latent_memory_rows, where

COPY_REVISITED = "copy_revisited"
LATENT_REFERENCES = (COPY_REVISITED, CONTEXT_MEAN, RANDOM_FRAMES)
NOTES = {
    COPY_REVISITED: "true latents of the revisited context frame: the copy oracle",
    CONTEXT_MEAN: "mean of the context frames' true latents: no memory of the place",
    RANDOM_FRAMES: "true latents of the same frame of the random_frames donor episode",
}


def frame_mse(candidate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(t n c), (t n c) -> (t,) mean squared error over tokens and channels; NaN where a latent is unknown."""
    error = (np.asarray(candidate, np.float64) - np.asarray(truth, np.float64)) ** 2
    return reduce(error, "t n c -> t", "mean")


def reference_latents(window: Sequence[np.ndarray], donor: Sequence[np.ndarray], revisit_of: np.ndarray, context: int) -> dict[str, tuple[np.ndarray, ...]]:
    """The latent references of one example, name -> per level (R n_l c).

    window: per level (C+R n_l c) the example's true latents; donor: per level (R n_l c) the donor
    episode's at the rollout frames; revisit_of: (R,) the context frame each rollout frame revisits
    or -1 (those frames copy the last context frame; they get no rows anyway).
    """
    revisited = np.where(revisit_of >= 0, revisit_of, context - 1)
    rollout = len(revisit_of)
    return {
        COPY_REVISITED: tuple(level[revisited] for level in window),
        CONTEXT_MEAN: tuple(repeat(reduce(level[:context], "t n c -> n c", "mean"), "n c -> r n c", r=rollout) for level in window),
        RANDOM_FRAMES: tuple(donor),
    }


def candidate_rows(candidate: str, example: int, latents: Sequence[np.ndarray], truth: Sequence[np.ndarray], revisit_of: np.ndarray,
                   within: pa.Array, derived: Collection[int] = ()) -> pa.Table:
    """Rows of one candidate on one example (tables.LATENT_MEMORY_SCHEMA).

    latents, truth: per level (R n_l c); revisit_of: (R,); within: (R,) tables.within_reach.
    One row per revisit frame and level where the candidate has that latent (NaN: none, no row).
    """
    frames = np.flatnonzero(revisit_of >= 0)
    tables = []
    for level, (mine, true) in enumerate(zip(latents, truth, strict=True)):
        mse = frame_mse(mine[frames], true[frames])
        known = np.isfinite(mse)
        tables.append(latent_memory_rows(candidate, example, level, frames[known], mse[known], within.take(frames[known]), level in derived))
    return pa.concat_tables(tables)


def memory_matrix(table: pa.Table, candidate: str, level: int, examples: Sequence[int], frames: int, column: str = "mse") -> np.ndarray:
    """(n frames) float: `column` of a candidate's level per example (in `examples` order) and rollout
    frame; booleans as 0/1; NaN where there is no row (a frame that is no revisit) or the value is null."""
    selected = where(table, candidate=candidate, level=level)
    position = {index: row for row, index in enumerate(examples)}
    matrix = np.full((len(examples), frames), np.nan)
    rows = [position[index] for index in selected["example"].to_pylist()]
    matrix[rows, selected["frame"].to_numpy()] = pc.cast(selected[column], pa.float64()).to_numpy(zero_copy_only=False)
    return matrix


def candidates(table: pa.Table, methods: Sequence[str]) -> list[str]:
    """Candidates present in the table: methods in their order, then the latent references."""
    present = set(pc.unique(table["candidate"]).to_pylist())
    return [name for name in (*methods, *LATENT_REFERENCES) if name in present]


def derived_levels(table: pa.Table, candidate: str) -> list[int]:
    """Levels of a candidate whose latents were re-encoded from its finest ones."""
    selected = table.filter(pc.and_(pc.equal(table["candidate"], candidate), table["derived"]))
    return sorted(pc.unique(selected["level"]).to_pylist())
