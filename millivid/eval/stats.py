"""Means with percentile-bootstrap confidence intervals over examples, for many columns at once.

Examples are the resampled unit (frames of one example are not independent). A resample is a
vector of example counts drawn from a multinomial, so all resamples of all columns are one
matrix product: (resamples n) @ (n k). Missing values (NaN) drop out of both sums and counts.

    curve = bootstrap_mean(lpips, resamples=1000, seed=0)   # lpips (examples frames)
    curve.mean, curve.low, curve.high                       # (frames,) each
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from einops import rearrange


@dataclass(frozen=True)
class Interval:
    mean: np.ndarray  # (k,) mean over examples with a value
    low: np.ndarray  # (k,) lower bound of the interval
    high: np.ndarray  # (k,)
    count: np.ndarray  # (k,) examples with a value

    def at(self, column: int) -> dict[str, float | int | None]:
        """One column as JSON-ready numbers (None where undefined)."""
        return {
            "mean": finite_or_none(self.mean[column]),
            "ci_low": finite_or_none(self.low[column]),
            "ci_high": finite_or_none(self.high[column]),
            "examples": int(self.count[column]),
        }


def bootstrap_mean(values: np.ndarray, resamples: int, seed: int, level: float = 0.95) -> Interval:
    """values: (n,) or (n k) per example, NaN where missing -> mean and `level` interval per column."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = rearrange(values, "n -> n 1")
    if values.ndim != 2 or not len(values):
        raise ValueError(f"bootstrap needs (examples) or (examples columns) values, got shape {values.shape}")
    n = len(values)
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    weights = np.random.default_rng([seed, 0xB007]).multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / present.sum(axis=0)
        resampled = (weights @ filled) / (weights @ present)  # (resamples k)
    tail = (1 - level) / 2 * 100
    low, high = quantiles(resampled, (tail, 100 - tail))
    return Interval(mean, low, high, present.sum(axis=0))


def quantiles(resampled: np.ndarray, percents: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Percentiles per column ignoring NaN; NaN for a column with no value at all."""
    defined = ~np.isnan(resampled).all(axis=0)
    out = np.full((2, resampled.shape[1]), np.nan)
    if defined.any():
        out[:, defined] = np.nanpercentile(resampled[:, defined], percents, axis=0)
    return out[0], out[1]


def interval_text(interval: dict[str, float | int | None], digits: int = 4) -> str:
    """An `Interval.at` entry as 'mean [low, high]', signed, `digits` decimals; n/a where undefined."""
    def text(value: float | int | None) -> str:
        return "n/a" if value is None else f"{value:+.{digits}f}"

    return f"{text(interval['mean'])} [{text(interval['ci_low'])}, {text(interval['ci_high'])}]"


def finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
