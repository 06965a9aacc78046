"""The Grafana dashboard for Ray's Prometheus metrics, and the training gauges it charts."""

from __future__ import annotations

import json
import re

import pytest
from services import REPO

from millivid_platform.ray_metrics import GAUGES

DASHBOARD = REPO / "dashboards" / "grafana" / "ray-training.json"


def expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_dashboard_charts_every_training_gauge_and_only_those():
    dashboard = json.loads(DASHBOARD.read_text())
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {"datasource", "SessionName"}
    charted = {name for expr in expressions() for name in re.findall(r"ray_millivid_\w+", expr)}
    assert charted == {f"ray_{name}" for name, _ in GAUGES.values()}  # Ray exports application metrics as ray_<name>
    assert all('SessionName=~"$SessionName"' in expr for expr in expressions())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert all(panel["datasource"]["uid"] == "${datasource}" and panel["targets"] for panel in panels)
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


@pytest.mark.integration
def test_training_gauges_are_set_inside_a_ray_worker(ray_session):
    def record() -> bool:
        from millivid_platform.ray_metrics import record_progress

        record_progress("diffusion:millivid", 5, 10, {"train/steps_per_s": 2.0, "train/loss": 0.5}, batch_size=8)
        return True

    assert ray_session.get(ray_session.remote(record).remote())
