"""The hierarchical autoencoder: a pyramid of token levels per frame.

    model.py       encoder/decoder (build_autoencoder), variants hierarchical and downscaled
    pyramid.py     pixel pyramids, patches, token positions, latent pooling
    transformer.py the pre-norm transformer both halves use
    loss.py        pyramid MSE (level l weighted base^l) + LPIPS on the finest level
    task.py        the training Task for millivid.training.fit
    frames.py      frame sources: the episode store, in-memory arrays, synthetic frames
    evaluate.py    PSNR/SSIM/LPIPS per level; hierarchical vs downscaled table
    figures.py     reconstruction pictures
    encode.py      batch encoding to float16 per-level latents
    checkpoint.py  save/load (weights_only-loadable dicts)

Submodules are imported explicitly (this package's config is imported by millivid.config,
which must stay light).
"""
