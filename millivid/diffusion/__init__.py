"""Multi-level latent diffusion: rollout schedules, the diffusion transformer and its sampler."""
