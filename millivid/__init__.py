"""MilliVid: hierarchical latents for long-range consistent video generation.

The science package: data, models, schedules, sampling and metrics. It imports no
orchestration, tracking or cluster library; the experiment platform lives in
`millivid_platform` (folder `platform/`).
"""

__version__ = "0.1.0"
