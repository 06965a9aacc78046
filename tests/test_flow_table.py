"""The stage flows, made from one table: importable by their names, described, loadable from their entrypoints."""

import yaml
from services import REPO


def test_each_stage_flow_is_importable_by_its_name_with_its_description():
    from millivid_flows import pipeline as flows

    assert list(flows.BY_HAND) == [name for name, _, _ in flows.STAGE_FLOWS]
    for name, _, description in flows.STAGE_FLOWS:
        flow = getattr(flows, name.replace("-", "_"))
        assert flow is flows.BY_HAND[name]
        assert (flow.name, flow.description, flow.__doc__) == (name, description, description)
        assert list(flow.parameters.properties) == ["params"]  # the run form: one PipelineParams


def test_prefect_yaml_and_served_entrypoints_load_the_same_flows(monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    from millivid_flows import pipeline as flows

    for deployment in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"], use_placeholder_flow=False)
        assert flow.name == deployment["name"] and flow.description
    monkeypatch.chdir(REPO)
    for name, flow in flows.BY_HAND.items():  # `serve.py` records `flows/pipeline.py:<function name>`
        entrypoint = flow.to_deployment(name="local").entrypoint
        assert entrypoint == f"flows/pipeline.py:{name.replace('-', '_')}"
        assert load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False).name == name
