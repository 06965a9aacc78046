"""A one-page HTML report of a pipeline run: what ran, what it cost, what the rollouts show.

    html = render_report(title, stages, summary, images)

`stages`: one row per stage (name, MLflow run, cached, seconds); `summary`: the evaluation's
summary.json; `images`: name -> PNG bytes (plots, reconstruction figure), embedded inline so the
file stands alone as an MLflow artifact. The latent-memory plot (LATENT_MEMORY_PLOT), when given,
sits under the latent-memory table.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

HEADLINE_METRICS = (("lpips", "LPIPS ↓"), ("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"))
REVISIT_SUBSETS = (("revisit", "LPIPS revisits"), ("revisit_within_reach", "within reach"), ("revisit_out_of_reach", "out of reach"))
LATENT_MEMORY_PLOT = "plots/latent_memory.png"


def render_report(
    title: str,
    stages: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any] | None,
    images: Mapping[str, bytes],
    notes: Sequence[str] = (),
) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='note'>{html.escape(note)}</p>" for note in notes]
    parts.append(stage_table(stages))
    images = dict(images)
    if summary:
        parts.append(consistency_table(summary))
        parts.append(headline_note(summary.get("headline")))
        parts.append(latent_memory_table(summary.get("latent_memory")))
        if LATENT_MEMORY_PLOT in images:
            parts.append(figure(LATENT_MEMORY_PLOT, images.pop(LATENT_MEMORY_PLOT)))
    parts += [figure(name, png) for name, png in images.items()]
    return PAGE.format(title=html.escape(title), body="\n".join(parts))


def stage_table(stages: Sequence[Mapping[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(s['stage']))}</td><td><code>{html.escape(str(s['run_id']))}</code></td>"
        f"<td>{'cached' if s['cached'] else 'ran'}</td><td>{float(s['seconds']):.1f}</td></tr>"
        for s in stages
    )
    return f"<h2>Stages</h2><table><tr><th>stage</th><th>MLflow run</th><th></th><th>seconds</th></tr>{rows}</table>"


def consistency_table(summary: Mapping[str, Any]) -> str:
    """Mean ± 95% CI over the last half of the rollout and over revisit frames, one row per method."""
    header = "".join(f"<th>{label} last half</th>" for _, label in HEADLINE_METRICS)
    header += "".join(f"<th>{label}</th>" for _, label in REVISIT_SUBSETS)
    header += "<th>reach (frames)</th><th>sharpness / truth</th><th>crosses random frames at</th>"
    rows = []
    for name, entry in summary["per_method"].items():
        cells = [interval_cell(entry["last_half"][metric]) for metric, _ in HEADLINE_METRICS]
        cells += [subset_cell(entry.get(subset)) for subset, _ in REVISIT_SUBSETS]
        cells.append(html.escape(str((entry.get("reach") or {}).get("overall", "–"))))
        cells.append(interval_cell(entry["sharpness_vs_truth"]))
        crossing = entry.get("crosses_random_frames") or {}
        cells.append(html.escape(str(crossing.get("sustained", "–"))))
        kind = "reference" if entry["reference"] else "method"
        rows.append(f"<tr class='{kind}'><td>{html.escape(name)}</td>{''.join(f'<td>{c}</td>' for c in cells)}</tr>")
    backbone = html.escape(str(summary.get("lpips_backbone", "?")))
    fvd = summary.get("fvd", {})
    fvd_note = "FVD available" if fvd.get("available") else f"FVD unavailable: {html.escape(str(fvd.get('reason')))}"
    return (
        f"<h2>Consistency</h2><p>LPIPS backbone: <b>{backbone}</b>. {fvd_note}. Revisit frames are within reach "
        "when the revisited context frame was context of a step that generated the frame.</p>"
        f"<table><tr><th>method</th>{header}</tr>{''.join(rows)}</table>"
    )


def subset_cell(subset: Mapping[str, Any] | None) -> str:
    """LPIPS on a subset of frames, with its frame count."""
    if not subset:
        return "–"
    return f"{interval_cell(subset.get('lpips'))} <small>({subset['frames']} frames)</small>"


def latent_memory_table(memory: Mapping[str, Any] | None) -> str:
    """Latent MSE on revisit frames per level and candidate; for methods the difference to context_mean."""
    if not memory or not memory.get("levels"):
        note = (memory or {}).get("note") or "not measured"
        return f"<h2>Latent memory</h2><p>{html.escape(note)}</p>"
    levels = memory["levels"]
    names = list(dict.fromkeys(name for entries in levels.values() for name in entries))
    header = "".join(f"<th>level {html.escape(str(level))}</th>" for level in levels)
    rows = []
    for name in names:
        entries = [levels[level].get(name) for level in levels]
        kind = "reference" if any(entry and entry["reference"] for entry in entries) else "method"
        cells = "".join(f"<td>{memory_cell(entry)}</td>" for entry in entries)
        rows.append(f"<tr class='{kind}'><td>{html.escape(name)}</td>{cells}</tr>")
    return (
        "<h2>Latent memory</h2><p>Mean squared error of each candidate's latents on revisit frames, per level "
        "(level 0 finest). A method with memory is below context_mean and random_frames at the coarse levels, "
        "approaching copy_revisited. Derived levels were re-encoded from the generated finest latents.</p>"
        f"<table><tr><th>candidate</th>{header}</tr>{''.join(rows)}</table>"
    )


def memory_cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "–"
    cell = interval_cell(entry["mse"]) + (" <small>(derived)</small>" if entry["derived"] else "")
    if entry.get("vs_context_mean"):
        cell += f"<br><small>− context_mean: {interval_cell(entry['vs_context_mean'])}</small>"
    return cell


def headline_note(headline: Mapping[str, Any] | None) -> str:
    """The paper's claim as tested: the method against each rival on revisit frames, and quality."""
    if not headline:
        return ""
    method = html.escape(str(headline["method"]))
    items = []
    for rival, entry in headline["against"].items():
        verdict = "beats" if entry["beats"] else "does not beat"
        items.append(f"<li>{method} {verdict} {html.escape(rival)} on revisit frames: LPIPS difference "
                     f"{interval_cell(entry['revisit_lpips_difference'])}</li>")
    quality = headline.get("quality_vs_full_res")
    if quality:
        verdict = "not worse than" if quality["not_worse"] else "worse than"
        items.append(f"<li>quality ({html.escape(quality['network'])}, pooled) {verdict} full_res: "
                     f"{quality[headline['method']]:.3f} vs {quality['full_res']:.3f}</li>")
    verdict = "holds" if headline["holds"] else "does not hold"
    return f"<h2>Headline</h2><p class='note'>The headline claim <b>{verdict}</b> for {method}.</p><ul>{''.join(items)}</ul>"


def interval_cell(value: Mapping[str, Any] | None) -> str:
    if not value or value.get("mean") is None:
        return "–"
    low, high = value.get("ci_low"), value.get("ci_high")
    band = f" <small>[{low:.3f}, {high:.3f}]</small>" if low is not None and high is not None else ""
    return f"{value['mean']:.3f}{band}"


def figure(name: str, png: bytes) -> str:
    encoded = base64.b64encode(png).decode()
    return f"<figure><img src='data:image/png;base64,{encoded}' alt='{html.escape(name)}'><figcaption>{html.escape(name)}</figcaption></figure>"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.reference {{ color: #666; font-style: italic; }}
img {{ max-width: 100%; image-rendering: pixelated; }}
.note {{ background: #fff6d5; padding: 6px; }}
</style></head>
<body>
{body}
</body></html>
"""
