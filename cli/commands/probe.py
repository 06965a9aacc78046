"""`millivid probe`: does a trained rollout model use the context frame that a revisit shows again?

Context knockout (millivid/eval/knockout.py) on the evaluation's windows (`eval.*` of --config:
the same examples, context, rollout and revisit rule as `millivid eval`), teacher-forced.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from millivid_cli.main import CommandError, add_config_arguments, config_from_args, emit


def register(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--model", required=True, metavar="RUN_OR_PATH",
                        help="a diffusion stage's MLflow run id, or the URI of its model.pt")
    parser.add_argument("--out", help="folder (any fsspec URI) for knockout.png and cases.json")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from millivid import storage
    from millivid.data.reader import open_dataset
    from millivid.diffusion.checkpoint import load_rollout_model
    from millivid.eval.knockout import case_errors, knockout_cases, rows_of, summarize_knockout
    from millivid.eval.plots import knockout_png
    from millivid.eval.protocol import EvalData, draw_examples, load_window
    from millivid_platform.artifacts import resolve_output
    from millivid_platform.settings import load_settings

    cfg = config_from_args(args).eval
    if args.out and (found := storage.filesystem(args.out))[0].isfile(found[1]):
        raise CommandError(f"--out {args.out}: a file is there; --out names a folder (knockout.png and cases.json go in it)")
    model_uri = resolve_output(load_settings(), args.model, "model_uri")
    model, info = load_rollout_model(model_uri)
    schedule = info.schedule()
    data = EvalData(open_dataset(info.dataset_uri), open_dataset(info.latents_uri))
    examples = draw_examples(data.frames, cfg)
    if len(examples) < 2:
        raise CommandError(f"{info.dataset_uri}: {len(examples)} evaluation window(s); the knockout needs 2 (one lends the other its frames)")
    windows = [load_window(data, example, cfg) for example in examples]
    rows = []
    for index, (example, window) in enumerate(tqdm(list(zip(examples, windows, strict=True)), desc="knockout", file=sys.stderr)):
        cases = knockout_cases(schedule, window.pose, cfg)
        donor = windows[(index + 1) % len(windows)]
        errors = case_errors(model, schedule, window.latents, donor.latents, window.actions, cases, seed=example.seed)
        rows += rows_of(example.index, cases, errors)
    if not rows:
        raise CommandError(f"no revisit frame of the {len(examples)} windows lies in the sight of a {info.method} step "
                           f"(reach {schedule.reach.overall}, eval.revisit_min_gap {cfg.revisit_min_gap})")
    levels = summarize_knockout(rows, resamples=cfg.bootstrap, seed=cfg.seed)
    result = {"method": info.method, "model": model_uri, "examples": len(examples), "cases": len(rows),
              "reach": schedule.reach.describe(), "levels": levels}
    if args.out:
        storage.write_bytes(storage.join(args.out, "knockout.png"), knockout_png(levels, info.method))
        storage.write_bytes(storage.join(args.out, "cases.json"), json.dumps([row.to_json() for row in rows]).encode())
        result["out"] = args.out
    return emit(result, args.json, text=knockout_lines)


def knockout_lines(result: dict[str, Any]) -> Iterator[str]:
    """The cases probed, then per level the v-MSE intact, knocked out, control and the memory effect."""
    from millivid import storage
    from millivid.eval.stats import interval_text

    yield f"{result['method']}: {result['cases']} cases on {result['examples']} windows; reach {result['reach']['overall']} frames"
    for level, entry in result["levels"].items():
        effect, intact = entry["memory_effect"]["mean"], entry["intact"]["mean"]
        relative = f" ({100 * effect / intact:+.2f}% of intact)" if effect is not None and intact else ""
        yield (f"level {level} ({entry['cases']} cases, {entry['examples']} examples): v-MSE on revisit frames intact "
               f"{interval_text(entry['intact'])}, revisited frame knocked out {interval_text(entry['knocked'])}, another frame "
               f"knocked out {interval_text(entry['control'])}; memory effect (knocked - control) "
               f"{interval_text(entry['memory_effect'])}{relative}")
    if "out" in result:
        yield f"wrote {storage.join(result['out'], 'knockout.png')} and cases.json"
