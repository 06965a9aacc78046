"""What differs between runs' resolved configurations, key by dotted key.

    differing_keys({"run a": config_a, "run b": config_b})
        # [("eval.bootstrap", {"run a": "50", "run b": "60"}), ...]; a key a run lacks shows as MISSING
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from millivid_platform.tracking import flatten

MISSING = "—"


def flat_config(config: Mapping[str, Any] | None) -> dict[str, str]:
    """Dotted key -> value as MLflow params show it (lists as JSON)."""
    return flatten(config) if config else {}


def differing_keys(configs: Mapping[str, Mapping[str, Any] | None]) -> list[tuple[str, dict[str, str]]]:
    """Keys whose value is not the same in every run (runs without a config are left out)."""
    flat = {label: flat_config(config) for label, config in configs.items() if config}
    keys = sorted({key for values in flat.values() for key in values})
    rows = []
    for key in keys:
        values = {label: values.get(key, MISSING) for label, values in flat.items()}
        if len(set(values.values())) > 1:
            rows.append((key, values))
    return rows
