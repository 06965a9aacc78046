"""`millivid doctor`: versions, resolved services and storage, model weights in effect."""

from __future__ import annotations

import argparse
import platform as std_platform
import sys
from typing import Any

from millivid_cli.main import add_config_arguments, config_from_args, emit


def register(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def report(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from millivid.eval.fvd import i3d_status
    from millivid.perceptual import LpipsUnavailable, backbone_status
    from millivid_platform.settings import load_settings
    from millivid_platform.tracking import (
        TAG_GIT_COMMIT,
        TAG_GIT_DIRTY,
        git_state,
        package_versions,
    )

    config = config_from_args(args)
    settings = load_settings()
    lpips_cfg = config.autoencoder.lpips
    lpips: dict[str, Any] = {}
    for role, net, choice, path in (
        ("training", lpips_cfg.net, lpips_cfg.backbone, lpips_cfg.weights_path),
        ("eval", "alex", config.eval.lpips_backbone, config.eval.lpips_weights_path),
    ):
        try:
            status = backbone_status(net, choice, path)
            lpips[role] = {"net": net, "requested": choice, "in_effect": status.in_effect,
                           "weights": status.weights, "reason": status.reason}
        except LpipsUnavailable as err:
            lpips[role] = {"net": net, "requested": choice, "in_effect": "unavailable", "reason": str(err)}
    git = git_state()
    return {
        "python": sys.version.split()[0],
        "platform": std_platform.platform(),
        "versions": package_versions(),
        "git": {"commit": git[TAG_GIT_COMMIT], "dirty": git[TAG_GIT_DIRTY] == "true"},
        "config": args.config,
        **settings.describe(),
        "torch": {
            "cuda": torch.cuda.is_available(),
            "devices": torch.cuda.device_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
        },
        "lpips": lpips,
        "i3d": i3d_status(config.eval.i3d_uri),
    }


def run(args: argparse.Namespace) -> int:
    return emit(report(args), args.json)
