"""One page of the site: the shell every page shares (navigation, run selector, scripts) and the
charts it holds, each drawn from its own data file when it scrolls into view.

    page = Page("consistency.html", "Consistency and quality")
    page.add(f"<h2>LPIPS</h2>{page.chart(figure)}")
    page.html(site)      # the document; page.charts: chart id -> figure, written to data/<id>.js
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import plotly.graph_objects as go
from plotly.io.json import to_json_plotly

from millivid_dashboards.charts import CHART_CONFIG, SVG_DASHES, RunStyle, run_dash

NAV = (
    ("index.html", "Overview"),
    ("consistency.html", "Consistency & quality"),
    ("reconstruction.html", "Reconstruction"),
    ("schedules.html", "Schedules"),
    ("rollouts.html", "Rollouts"),
)
PLOTLY_JS = "assets/plotly.min.js"


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class SiteInfo:
    title: str
    site_id: str  # tells sites apart in the browser's remembered run selection
    runs: tuple[RunStyle, ...]


@dataclass
class Page:
    file: str
    title: str
    parts: list[str] = field(default_factory=list)
    charts: dict[str, go.Figure] = field(default_factory=dict)

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)

    def chart(self, figure: go.Figure, kind: str = "chart") -> str:
        """A placeholder the page's script fills with `figure` once it comes near the viewport."""
        chart_id = f"{self.file.removesuffix('.html')}-{len(self.charts)}"
        self.charts[chart_id] = figure
        # the figure's height up front: charts drawn later do not push the page around
        return f'<div class="{kind}" id="{chart_id}" data-src="data/{chart_id}.js" style="height:{figure.layout.height}px"></div>'

    def html(self, site: SiteInfo) -> str:
        nav = "".join(f'<a href="{file}"{" class=active" if file == self.file else ""}>{escape(label)}</a>' for file, label in NAV)
        plotly = f'<script src="{PLOTLY_JS}"></script>' if self.charts else ""
        return PAGE.format(title=escape(f"{self.title} · {site.title}"), site_title=escape(site.title), nav=nav,
                           site_id=escape(site.site_id), runs=run_selector(site.runs), plotly=plotly,
                           heading=escape(self.title), body="\n".join(self.parts))


def chart_script(chart_id: str, figure: go.Figure) -> str:
    """The data file of one chart: a call handing the figure to the page's script."""
    spec = {**figure.to_plotly_json(), "config": CHART_CONFIG}
    return f"MilliVid.chart({to_json_plotly(chart_id)}, {to_json_plotly(spec)});\n"


def run_selector(runs: tuple[RunStyle, ...]) -> str:
    if len(runs) < 2:
        return ""
    boxes = "".join(f'<label><input type="checkbox" class="run-toggle" value="{escape(run.key)}"{" checked" if run.visible else ""}> '
                    f"{escape(run.label)} {dash_sample(run)}</label>" for run in runs)
    return f'<fieldset class="runs"><legend>runs shown on every chart and player</legend>{boxes}</fieldset>'


def dash_sample(run: RunStyle) -> str:
    """A short line drawn in the run's dash, as its lines appear on the charts."""
    return (f'<svg width="36" height="8" aria-hidden="true"><line x1="0" y1="4" x2="36" y2="4" stroke="#333" stroke-width="2" '
            f'stroke-dasharray="{SVG_DASHES[run_dash(run)]}"/></svg>')


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="assets/site.css">
{plotly}
<script src="assets/site.js"></script>
</head>
<body data-site="{site_id}">
<header><h1>{site_title}</h1><nav>{nav}</nav></header>
<main>
<h2>{heading}</h2>
{runs}
{body}
</main>
</body></html>
"""
