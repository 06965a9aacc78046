"""The comparison site: built from real runs of the smoke pipeline (Prefect test harness, MLflow on
SQLite, local Ray) and looked at in headless Chromium; plus its pure parts without services."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
from conftest import workspace_environment

from millivid_dashboards.config_diff import MISSING, differing_keys
from millivid_dashboards.tables import verdict

PAGES = ("index.html", "consistency.html", "reconstruction.html", "schedules.html", "rollouts.html")
# smoke with revisit frames (40 context + 48 rollout frames, a smaller gap) and the downscaled autoencoder
REVISITS = ["autoencoder.compare_downscaled=true", "eval.context=40", "eval.rollout=48", "eval.revisit_min_gap=8"]
# the same but only its first example, so that two runs' videos of one example play together
FIRST_EXAMPLE = [*REVISITS, "eval.examples=1"]


def summary_with(revisit_frames: int, holds: bool = False) -> dict:
    difference = {"mean": -0.1, "ci_low": -0.2, "ci_high": -0.05} if revisit_frames else {"mean": None, "ci_low": None, "ci_high": None}
    return {"headline": {"method": "millivid", "holds": holds, "quality_vs_full_res": None,
                         "against": {"full_res": {"revisit_lpips_difference": difference, "beats": bool(revisit_frames)}}},
            "per_method": {"millivid": {"revisit": {"frames": revisit_frames}}}}


def test_no_verdict_without_revisit_frames():
    state, why = verdict(summary_with(revisit_frames=0))
    assert state == "no verdict" and "no revisit frames" in why
    assert verdict(summary_with(revisit_frames=12))[0] == "does not hold"
    assert verdict(summary_with(revisit_frames=12, holds=True))[0] == "holds"
    assert verdict(None)[0] == "no verdict"


def test_config_differences_name_every_key_that_differs():
    base = {"eval": {"bootstrap": 50, "rollout": 16}, "name": "smoke"}
    other = {"eval": {"bootstrap": 60, "rollout": 16, "select": "random"}, "name": "smoke"}
    rows = dict(differing_keys({"a": base, "b": other, "c": None}))
    assert rows == {"eval.bootstrap": {"a": "50", "b": "60"}, "eval.select": {"a": MISSING, "b": "random"}}


@pytest.fixture(scope="module")
def smoke_runs(smoke_workspace):
    """Smoke pipelines in one workspace: the first (no revisit frames; cached in the session's smoke
    workspace) promoted as the baseline; the second with revisit frames and both autoencoders, whose
    report stage compares it with the first; the third evaluates only the second's first example
    (its other stages cached)."""
    from millivid_flows.pipeline import pipeline
    from millivid_platform import regression
    from millivid_platform.pipeline import PipelineParams

    with workspace_environment(smoke_workspace), pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        baseline = pipeline(PipelineParams(preset="smoke"))
        regression.promote(baseline["evaluate"].run_id)
        revisits = pipeline(PipelineParams(preset="smoke", overrides=REVISITS))
        first_example = pipeline(PipelineParams(preset="smoke", overrides=FIRST_EXAMPLE))
        yield baseline, revisits, first_example


@pytest.mark.integration
@pytest.mark.slow
def test_report_stage_logs_the_site_of_its_run_with_the_baseline(smoke_runs):
    import mlflow

    from millivid import storage

    baseline, revisits, _ = smoke_runs
    run_id = revisits["pipeline_run_id"]
    artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(run_id, "report")}
    assert {f"report/{page}" for page in PAGES} | {"report/assets", "report/data", "report/media"} <= artifacts
    index = mlflow.artifacts.load_text(f"runs:/{run_id}/report/index.html")
    assert f"/runs/{run_id}" in index and f"/runs/{baseline['pipeline_run_id']}" in index  # links to both MLflow runs
    assert "(baseline)" in index and "eval.revisit_min_gap" in index  # what differs from the baseline
    assert "no verdict" in index  # the baseline's examples have no revisit frames: no verdict, not "does not hold"
    assert storage.exists(revisits["report"].outputs["report_uri"])  # and a copy on the storage root


@pytest.mark.integration
@pytest.mark.slow
def test_site_from_smoke_runs_in_headless_chromium(smoke_runs, tmp_path, test_artifacts):
    """`millivid report` over both runs; every page in Chromium: no console errors, every chart drawn
    and not blank, every video with a duration, the rollout players on one clock."""
    import mlflow

    from millivid_cli.main import main
    from millivid_dashboards.browser import chromium, chromium_path, inspect_page

    if chromium_path() is None:
        pytest.skip("chromium not installed (CI installs it)")
    baseline, revisits, first_example = smoke_runs
    site = tmp_path / "site"
    runs = [revisits["pipeline_run_id"], baseline["evaluate"].run_id, first_example["pipeline_run_id"]]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["report", "--runs", *runs, "--out", str(site), "--json"]) == 0
    built = json.loads(out.getvalue())
    assert built["runs"] == [revisits["pipeline_run_id"], baseline["pipeline_run_id"], first_example["pipeline_run_id"]]
    assert built["baselines"] == [baseline["pipeline_run_id"]]
    logged = mlflow.MlflowClient().search_runs([mlflow.get_experiment_by_name("millivid").experiment_id],
                                               "tags.`millivid.stage` = 'site'")
    assert "site/index.html" in {item.path for item in mlflow.MlflowClient().list_artifacts(logged[0].info.run_id, "site")}

    screenshots = tmp_path / "screenshots"
    with chromium() as browser:
        reports = {page: inspect_page(browser, site / page, screenshots) for page in PAGES}
        sync = rollout_playback(browser, site / "rollouts.html")
    shutil.copytree(screenshots, test_artifacts, dirs_exist_ok=True)
    print(f"report site screenshots: {screenshots} (kept in {test_artifacts})")

    for page, report in reports.items():
        assert report.errors == [], page
        assert report.blank_charts == [], page
    charts = {page: len(report.charts) for page, report in reports.items()}
    # consistency: 3 metrics x (all, revisit, within, out of reach) + sharpness + stand-in + 3 latent levels
    assert charts == {"index.html": 0, "consistency.html": 17, "reconstruction.html": 1, "schedules.html": 3, "rollouts.html": 4}
    durations = reports["rollouts.html"].video_durations
    assert len(durations) == 5 and all(seconds > 0 for seconds in durations.values())  # 2 + 2 + 1 examples
    assert len(sync["after_seek"]["times"]) == 2
    assert sync["after_seek"]["position"].endswith(f"revisits context frame {sync['after_seek']['revisited']}")
    assert len(set(sync["after_seek"]["frames"])) == 1  # every video of the example shows the same frame
    assert sync["after_play"]["spread_s"] < 0.25 and min(sync["after_play"]["times"]) > max(sync["after_seek"]["times"])
    reconstruction = (site / "reconstruction.html").read_text()
    assert "hierarchical PSNR" in reconstruction and "downscaled PSNR" in reconstruction and "<img" in reconstruction


PLAYER_STATE = """(section) => ({
  times: [...section.querySelectorAll("figure:not([hidden]) video")].map((video) => video.currentTime),
  frames: [...section.querySelectorAll("figure:not([hidden]) video")].map((video) => Math.floor(video.currentTime * Number(section.dataset.fps))),
  position: section.querySelector(".position").textContent,
  revisited: JSON.parse(section.dataset.revisits)[0][1],
  spread_s: 0,
})"""


def rollout_playback(browser, path) -> dict:
    """In the first example with revisit frames and several runs' videos: jump to its first revisit, then play a while."""
    page = browser.new_page()
    try:
        page.goto(path.resolve().as_uri(), wait_until="load")
        section = page.locator("section.player[data-revisits^='[['] ").filter(has=page.locator("figure + figure")).first
        section.scroll_into_view_if_needed()
        page.wait_for_function("[...document.querySelectorAll('video')].every((video) => video.readyState >= 1)")
        section.locator("[data-action=revisit]").click()
        page.wait_for_timeout(500)
        after_seek = section.evaluate(PLAYER_STATE)
        section.locator("[data-action=play]").click()
        page.wait_for_timeout(1500)
        after_play = section.evaluate(PLAYER_STATE)
        after_play["spread_s"] = max(after_play["times"]) - min(after_play["times"])
        return {"after_seek": after_seek, "after_play": after_play}
    finally:
        page.close()
