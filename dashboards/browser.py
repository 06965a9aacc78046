"""The site in headless Chromium, looked at as a reader would: every page opened, every chart
scrolled into view until drawn, every video's metadata loaded; for the tests and the benchmark.

    with chromium() as browser:
        report = inspect_page(browser, site / "consistency.html", screenshots_dir)
        report.errors, report.blank_charts, report.video_durations, report.load_ms, report.drawn_ms

Needs Python `playwright` (a dev dependency) and a Chromium binary (Debian's `chromium`; Playwright's
own browser download is not used).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# Without the background-networking flags Chromium keeps trying hosts this network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}
CHART_TIMEOUT_MS = 60_000

VIDEO_DURATIONS = """() => Promise.all([...document.querySelectorAll("video")].map((video) => new Promise((done) => {
  if (video.readyState >= 1) return done([video.getAttribute("src"), video.duration]);
  video.addEventListener("loadedmetadata", () => done([video.getAttribute("src"), video.duration]), { once: true });
  video.addEventListener("error", () => done([video.getAttribute("src"), -1]), { once: true });
})))"""


@dataclass
class PageReport:
    page: str
    load_ms: float  # navigation start to the load event
    drawn_ms: float = 0.0  # navigation start until the last chart was drawn, scrolling each into view
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed requests
    charts: dict[str, bool] = field(default_factory=dict)  # visible chart id -> drawn and not blank
    video_durations: dict[str, float] = field(default_factory=dict)  # src -> seconds
    screenshots: list[Path] = field(default_factory=list)

    @property
    def blank_charts(self) -> list[str]:
        return [chart for chart, drawn in self.charts.items() if not drawn]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def chromium(executable: str | None = None) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    path = executable or chromium_path()
    if path is None:
        raise RuntimeError("no chromium on PATH (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def non_blank(png: bytes) -> bool:
    """More than 2% of the pixels differ from the most common colour (the background)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    return len(colours) > 2 and 1 - counts.max() / len(pixels) > 0.02


def inspect_page(browser, path: Path, screenshots: Path | None = None, timeout_ms: int = CHART_TIMEOUT_MS,
                 max_charts: int | None = None) -> PageReport:
    """Open one page, draw every chart (or the first `max_charts`), load every video; screenshots of
    each chart and the page. `timeout_ms` bounds each wait, a chart's drawing included."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(timeout_ms)
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: errors.append(f"exception: {error}"))
    page.on("requestfailed", lambda request: cancelled_preload(request) or errors.append(f"request failed: {request.url} {request.failure}"))
    try:
        page.goto(path.resolve().as_uri(), wait_until="load")
        report = PageReport(path.name, page.evaluate("performance.timing.loadEventEnd - performance.timing.navigationStart"),
                            errors=errors)
        charts = [chart for chart in page.locator(".chart[data-src]").all() if chart.is_visible()][:max_charts]  # not hidden runs'
        for chart in charts:  # drawn as a reader scrolls down; timed apart from the screenshots below
            chart.evaluate("element => element.scrollIntoView({block: 'center'})")
            page.wait_for_selector(f"#{chart.get_attribute('id')}[data-drawn]", state="attached")
        report.drawn_ms = page.evaluate("performance.now()")
        for chart in charts:
            chart_id = chart.get_attribute("id")
            picture = chart.screenshot()
            report.charts[chart_id] = non_blank(picture)
            if screenshots is not None:
                report.screenshots.append(save(screenshots, f"{path.stem}-{chart_id}.png", picture))
        report.video_durations = dict(page.evaluate(VIDEO_DURATIONS))
        if screenshots is not None:
            page.evaluate("window.scrollTo(0, 0)")
            report.screenshots.append(save(screenshots, f"{path.stem}.png", page.screenshot(full_page=True)))
        return report
    finally:
        page.close()


def cancelled_preload(request) -> bool:
    """Chromium cancels a video's request once `preload="metadata"` has what it needs: not an error
    (a missing file fails with ERR_FILE_NOT_FOUND)."""
    return request.resource_type == "media" and "ERR_ABORTED" in str(request.failure)


def save(folder: Path, name: str, png: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(png)
    return folder / name
