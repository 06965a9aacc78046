"""`millivid ae train | encode | eval`: the autoencoder stages from the command line."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from millivid_cli.commands.pipeline import add_flow_arguments
from millivid_cli.main import CommandError, add_config_arguments, config_from_args, emit
from millivid_platform.pipeline import STAGES


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ae_command", metavar="ACTION", required=True)
    for name, until, help_text in (
        ("train", "autoencoder", "train the hierarchical autoencoder (a Prefect flow; data from the cache)"),
        ("encode", "encode", "encode the dataset into per-level latents (a Prefect flow)"),
    ):
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_config_arguments(command)
        command.add_argument("--force", nargs="+", default=[], choices=[*STAGES, "all"], metavar="STAGE",
                             help=f"stages to redo even when cached ({', '.join(STAGES)}, all)")
        add_flow_arguments(command)
        command.set_defaults(handler=run_flow, until=until, methods=None)
    evaluate = sub.add_parser("eval", help="per-level PSNR/SSIM/LPIPS of trained autoencoders",
                              description="per-level PSNR/SSIM/LPIPS on held-out frames, hierarchical vs downscaled")
    add_config_arguments(evaluate)
    evaluate.add_argument("--model", action="append", default=[], metavar="NAME=RUN_OR_PATH",
                          help="a model to evaluate (MLflow run id or model.pt URI); repeat to compare. "
                               "Default: the hierarchical and downscaled models the config trains (from the cache)")
    evaluate.add_argument("--data", help="dataset URI (default: the config's dataset, from the cache)")
    evaluate.add_argument("--frames", type=int, default=256, help="held-out frames to score")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--figure", help="also write the level-by-level comparison picture (PNG) here")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=run_eval)


def run_flow(args: argparse.Namespace) -> int:
    from millivid_cli.commands.pipeline import run as run_pipeline

    return run_pipeline(args)


def run_eval(args: argparse.Namespace) -> int:
    from millivid import storage
    from millivid.ae.checkpoint import load_autoencoder
    from millivid.ae.evaluate import compare_variants
    from millivid.ae.figures import comparison_figure
    from millivid.ae.frames import StoreFrames
    from millivid.data.reader import open_dataset
    from millivid.perceptual import Lpips
    from millivid_platform import embedded_prefect
    from millivid_platform.artifacts import resolve_output
    from millivid_platform.settings import load_settings

    config = config_from_args(args)
    settings = load_settings()
    settings.export_environment()
    if not (args.model and args.data):  # models or dataset come from the pipeline's flows
        embedded_prefect.start(settings)
    if args.model:
        pairs = [item.partition("=") for item in args.model]
        if any(not sep for _, sep, _ in pairs):
            raise CommandError("--model takes NAME=RUN_OR_PATH, e.g. --model hierarchical=3f2a...")
        models = {name: resolve_output(settings, value, "model_uri") for name, _, value in pairs}
    else:
        models = trained_models(config)
    data = args.data or trained_dataset(config)
    loaded = {name: load_autoencoder(uri) for name, uri in models.items()}
    frames = StoreFrames(open_dataset(data), held_out_split=args.split).held_out(args.frames)
    lpips_cfg = config.autoencoder.lpips
    result = compare_variants(loaded, frames, Lpips(lpips_cfg.net, lpips_cfg.backbone, lpips_cfg.weights_path),
                              precision=config.compute.precision)
    result["models"] = models
    if args.figure:
        storage.write_bytes(args.figure, comparison_figure(loaded, frames[:4]))
    return emit(result, args.json, text=level_lines)


def level_lines(result: dict[str, Any]) -> Iterator[str]:
    """One line per level: every model's PSNR, SSIM and LPIPS, and the PSNR difference of the two compared."""
    for row in result["levels"]:
        scores = "  ".join(f"{name}: PSNR {row[name]['psnr']:.2f} SSIM {row[name]['ssim']:.3f} LPIPS {row[name]['lpips']:.3f}"
                           for name in result["models"])
        difference = row.get("psnr_difference")
        if difference:
            first, second = result["compared"]
            scores += (f"  PSNR {first} - {second}: {difference['mean']:+.2f} dB "
                       f"[{difference['ci_low']:+.2f}, {difference['ci_high']:+.2f}]")
        yield f"level {row['level']} ({row['tokens']} tokens)  {scores}"


def trained_models(config) -> dict[str, str]:
    """Both variants the config trains, found through the pipeline cache (trained if missing)."""
    from millivid_flows.pipeline import train_autoencoder
    from millivid_platform.pipeline import PipelineParams

    both = config.model_copy(update={"autoencoder": config.autoencoder.model_copy(update={"compare_downscaled": True})})
    results = train_autoencoder(PipelineParams(config=both))
    return {variant: result.outputs["model_uri"] for variant, result in results["autoencoder"].items()}


def trained_dataset(config) -> str:
    from millivid_flows.pipeline import prepare_data
    from millivid_platform.pipeline import PipelineParams

    return prepare_data(PipelineParams(config=config))["data"].outputs["dataset_uri"]
