"""Serve every flow as a Prefect deployment (run by `millivid stack up`, or `python -m millivid_flows.serve`).

One deployment per flow users run by hand, plus `nightly-regression` on a cron schedule, each named
`SERVED` (`pipeline/local`, ...): `prefect deploy --all` (prefect.yaml) registers work-pool
deployments named after their flows (`pipeline/pipeline`, ...) on the same server without replacing these.
"""

from __future__ import annotations

import os

from millivid_platform.settings import load_settings
from millivid_platform.stack import SERVED

NIGHTLY_CRON = os.environ.get("MILLIVID_NIGHTLY_CRON", "0 2 * * *")
NIGHTLY_TIMEZONE = os.environ.get("MILLIVID_NIGHTLY_TIMEZONE", "UTC")


def deployments() -> list:
    from prefect.schedules import Cron

    from millivid_flows.nightly import nightly_regression
    from millivid_flows.pipeline import BY_HAND

    served = [flow.to_deployment(name=SERVED, tags=["millivid"]) for flow in BY_HAND.values()]
    served.append(nightly_regression.to_deployment(
        name=SERVED, tags=["millivid", "nightly"],
        schedules=[Cron(NIGHTLY_CRON, timezone=NIGHTLY_TIMEZONE)],
    ))
    return served


def main() -> None:
    settings = load_settings()
    settings.export_environment()
    from prefect import serve

    from millivid_platform.compute import ensure_ray

    ensure_ray(settings)  # before Prefect installs its handlers; flow runs reuse it
    serve(*deployments())


if __name__ == "__main__":
    main()
