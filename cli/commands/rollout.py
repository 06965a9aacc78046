"""`millivid rollout`: roll a trained model out from ground-truth context frames into a video."""

from __future__ import annotations

import argparse

from millivid_cli.main import CommandError


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN_OR_PATH",
                        help="a diffusion stage's MLflow run id, or the URI of its model.pt")
    parser.add_argument("--context", type=int, required=True, help="ground-truth context frames")
    parser.add_argument("--frames", type=int, required=True, help="frames to generate after the context")
    parser.add_argument("--out", required=True, help="video file (.mp4 or .gif): ground truth | rollout")
    parser.add_argument("--episode", help="episode id (default: the first test episode)")
    parser.add_argument("--start", type=int, default=0, help="first context frame in the episode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="DDIM steps (default: the training config's sampler)")
    parser.add_argument("--fps", type=float, default=8)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from millivid.ae.checkpoint import load_autoencoder
    from millivid.ae.codec import LatentCodec
    from millivid.data.reader import open_dataset
    from millivid.diffusion.checkpoint import load_rollout_model
    from millivid.diffusion.config import SamplerConfig
    from millivid.diffusion.rollout import rollout
    from millivid.video import as_video, side_by_side, write_video
    from millivid_platform.artifacts import resolve_output
    from millivid_platform.settings import load_settings

    if args.context < 1 or args.frames < 1:
        raise CommandError("--context and --frames must be at least 1")
    model, info = load_rollout_model(resolve_output(load_settings(), args.model, "model_uri"))
    schedule = info.schedule()
    latents, frames = open_dataset(info.latents_uri), open_dataset(info.dataset_uri)
    episode = args.episode or (latents.episodes("test") or latents.episodes())[0]
    if episode not in latents.by_id:
        raise CommandError(f"{info.latents_uri}: no episode {episode!r}")
    length = latents.length(episode)
    total = args.context + args.frames
    if args.start + args.context > length:
        raise CommandError(f"episode {episode} has {length} frames: no room for {args.context} context frames from {args.start}")
    stop = min(length, args.start + total)
    columns = [f"latent_{level}" for level in range(schedule.levels)]
    clip = latents.read(episode, args.start, stop, [*columns, "actions"])
    context = [torch.from_numpy(clip[name][None, : args.context]).float() for name in columns]
    codec = LatentCodec(load_autoencoder(info.autoencoder_uri))
    sampler = SamplerConfig(steps=args.steps or 50, batch_size=1)
    result = rollout(model, schedule, context, torch.from_numpy(clip["actions"][None]).long(), total, sampler, args.seed,
                     decode=codec.decode, reencode=codec.reencode if schedule.coarse_context_from_finest else None,
                     progress=True)
    generated = as_video(result.frames[0])
    truth = frames.read(episode, args.start, stop, ["frames"])["frames"]
    truth = np.concatenate([truth, np.zeros((total - len(truth), *truth.shape[1:]), np.uint8)])
    write_video(args.out, side_by_side([truth, generated], ["ground truth", f"{info.method} rollout"]), fps=args.fps,
                scale=max(1, 128 // truth.shape[1]))
    print(f"wrote {args.out}: {args.context} context + {args.frames} generated frames of {episode} ({info.method})")
    return 0
