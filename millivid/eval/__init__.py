"""Evaluation of rollouts: consistency and quality against rollout length.

    protocol     which windows (examples) and seeds; what a method is given (RolloutBatch)
    revisits     rollout frames that return to a camera pose seen in the context; the share of
                 training clips that revisit their own context
    references   context mean, copy last frame, random frames, ground-truth latents
    methods      a diffusion model + schedule as a rollout function
    consistency  LPIPS / PSNR / SSIM / sharpness per frame
    latent_memory  per-level latent error on revisit frames vs copy / context-mean / random latents
    fvd          I3D FVD where available, else the named random-feature stand-in
    stats        bootstrap confidence intervals over examples
    tables       per-frame rows, chunk features, curves; Parquet
    curves       rows and features -> curves and Fréchet distances per chunk
    summary      the JSON summary
    plots        PNG plots against rollout length
    showcase     side-by-side videos and strips
    compare      evaluate_methods / evaluate_subset / merge_subsets / finish
"""
