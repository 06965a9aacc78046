"""`millivid eval`: evaluate every method of a config (or given models) on the same examples."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from millivid_cli.main import CommandError, add_config_arguments, config_from_args, emit
from millivid_platform.pipeline import STAGES


def register(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=RUN_OR_PATH",
                        help="evaluate these rollout models (MLflow run id or model.pt URI) instead of training the "
                             "config's methods; repeat to compare; they must share one autoencoder")
    parser.add_argument("--force", nargs="+", default=[], choices=[*STAGES, "all"], metavar="STAGE",
                        help=f"stages to redo even when cached ({', '.join(STAGES)}, all)")
    parser.add_argument("--json", action="store_true", help="print the evaluation summary as one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from millivid import storage
    from millivid_platform import embedded_prefect, preflight
    from millivid_platform.settings import load_settings

    config = config_from_args(args)
    if not args.model:
        preflight.check_config(config, "evaluate")
    settings = load_settings()
    settings.export_environment()  # Ray starts only if the evaluation runs (a cache miss: `stages.execute`)
    if args.model:
        result = evaluate_models(settings, config, args.model, args.force)
    else:
        embedded_prefect.start(settings)
        result = evaluate_config(config, args.force)
    uri = result.outputs["evaluation_uri"]
    summary = storage.read_json(storage.join(uri, "summary.json"))
    return emit({"run_id": result.run_id, "evaluation_uri": uri, "summary": summary}, args.json, text=evaluation_lines)


def evaluation_lines(evaluation: dict[str, Any]) -> Iterator[str]:
    """Where the evaluation is, then each method's LPIPS over the last half of the rollout with its interval."""
    yield f"evaluation: {evaluation['evaluation_uri']} (MLflow run {evaluation['run_id']})"
    for name, entry in evaluation["summary"]["per_method"].items():
        lpips = entry["last_half"]["lpips"]
        yield f"{name:>22}: LPIPS last half {lpips['mean']:.4f} [{lpips['ci_low']:.4f}, {lpips['ci_high']:.4f}]"


def evaluate_config(config, force):
    from millivid_flows.pipeline import evaluate
    from millivid_platform.pipeline import PipelineParams

    return evaluate(PipelineParams(config=config, force=force))["evaluate"]


def evaluate_models(settings, config, specs: list[str], force: list[str]):
    """Evaluate already trained models: their files name their autoencoder, latents and dataset."""
    from millivid import storage
    from millivid.diffusion.checkpoint import load_rollout_model
    from millivid_platform import evaluation_stage
    from millivid_platform.artifacts import resolve_output
    from millivid_platform.pipeline import PipelineParams, open_pipeline
    from millivid_platform.stages import StageResult

    pairs = [spec.partition("=") for spec in specs]
    if any(not sep or not name for name, sep, _ in pairs):
        raise CommandError("--model takes NAME=RUN_OR_PATH, e.g. --model millivid=3f2a...")
    uris = {name: resolve_output(settings, value, "model_uri") for name, _, value in pairs}
    infos = {name: load_rollout_model(uri)[1] for name, uri in uris.items()}
    sources = {(i.autoencoder_uri, i.latents_uri, i.dataset_uri) for i in infos.values()}
    if len(sources) != 1:
        raise CommandError("the models were trained on different autoencoders or datasets; compare models of one pipeline")
    autoencoder_uri, latents_uri, dataset_uri = sources.pop()

    def given(stage: str, key: str, uri: str, hash_of: str) -> StageResult:
        return StageResult(stage, "given", "given", {key: uri, key.replace("_uri", "_hash"): storage.sha256(hash_of)}, True, 0.0)

    with open_pipeline(settings, PipelineParams(config=config, force=force), "evaluate-models") as (ctx, _):
        return evaluation_stage.run(
            ctx, config,
            given("data", "dataset_uri", dataset_uri, storage.join(dataset_uri, "manifest.json")),
            given("autoencoder", "model_uri", autoencoder_uri, autoencoder_uri),
            given("encode", "latents_uri", latents_uri, storage.join(latents_uri, "manifest.json")),
            {name: given(f"diffusion:{name}", "model_uri", uri, uri) for name, uri in uris.items()},
        )
