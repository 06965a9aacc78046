"""HTML tables of an evaluation's summary.json: the headline verdict, consistency per method,
latent memory per level.

    verdict(summary)            # ("holds" | "does not hold" | "no verdict", why): none without revisit frames
    headline_section(summary)   # the verdict and each rival's paired LPIPS difference on revisit frames
    consistency_table(summary)  # mean [95% CI] per method: last half, revisit subsets, reach, sharpness
    latent_memory_table(summary)
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

HEADLINE_METRICS = (("lpips", "LPIPS ↓"), ("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"))
REVISIT_SUBSETS = (("revisit", "LPIPS revisits"), ("revisit_within_reach", "within reach"), ("revisit_out_of_reach", "out of reach"))
VERDICT_CLASSES = {"holds": "verdict-holds", "does not hold": "verdict-fails", "no verdict": "verdict-none"}


def verdict(summary: Mapping[str, Any] | None) -> tuple[str, str]:
    """The headline claim's state and why. Without revisit frames there is nothing to test memory
    on: every difference is empty, and "does not hold" would claim a result that was never measured."""
    if not summary:
        return "no verdict", "no evaluation"
    headline = summary.get("headline")
    if not headline:
        return "no verdict", "the headline method was not evaluated"
    revisit = summary["per_method"][headline["method"]].get("revisit") or {}
    if not revisit.get("frames"):
        return "no verdict", ("the test examples have no revisit frames, so memory was not measured "
                              "(eval.select=revisits, a longer rollout or a smaller eval.revisit_min_gap make some)")
    empty = [rival for rival, entry in headline["against"].items() if entry["revisit_lpips_difference"].get("mean") is None]
    if empty:
        return "no verdict", f"no paired revisit frames against {', '.join(empty)}"
    if headline["holds"]:
        return "holds", f"{headline['method']} beats every rival on revisit frames and its quality is not worse than full_res"
    return "does not hold", "see the rivals below"


def verdict_badge(summary: Mapping[str, Any] | None) -> str:
    state, why = verdict(summary)
    return f"<span class='{VERDICT_CLASSES[state]}' title='{html.escape(why, quote=True)}'>{state}</span>"


def headline_section(summary: Mapping[str, Any]) -> str:
    """The paper's claim as tested: the method against each rival on revisit frames, and quality."""
    state, why = verdict(summary)
    headline = summary.get("headline")
    method = html.escape(str(headline["method"])) if headline else "the headline method"
    parts = [f"<p>The headline claim for {method}: <b class='{VERDICT_CLASSES[state]}'>{state}</b> — {html.escape(why)}.</p>"]
    if state == "no verdict" or not headline:
        return "".join(parts)
    items = []
    for rival, entry in headline["against"].items():
        beats = "beats" if entry["beats"] else "does not beat"
        contrast = entry.get("reach_contrast")  # summaries from before it existed have none
        by_reach = (f"; within its reach {interval_cell(contrast['within_reach'])}, out of it "
                    f"{interval_cell(contrast['out_of_reach'])}, difference {interval_cell(contrast['difference'])} "
                    f"(below 0: memory, not rollout position)") if contrast else ""
        items.append(f"<li>{method} {beats} {html.escape(rival)} on revisit frames: LPIPS difference "
                     f"{interval_cell(entry['revisit_lpips_difference'])}{by_reach}</li>")
    quality = headline.get("quality_vs_full_res")
    if quality:
        worse = "not worse than" if quality["not_worse"] else "worse than"
        items.append(f"<li>quality ({html.escape(quality['network'])}, pooled) {worse} full_res: "
                     f"{quality[headline['method']]:.3f} vs {quality['full_res']:.3f}</li>")
    return "".join(parts) + f"<ul>{''.join(items)}</ul>"


def consistency_table(summary: Mapping[str, Any]) -> str:
    """Mean [95% CI] over the last half of the rollout and over revisit frames, one row per method."""
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
        f"<p>LPIPS backbone: <b>{backbone}</b>. {fvd_note}. A revisit frame is within reach when the context frame it "
        "revisits was context of a step that generated it.</p>"
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
        return f"<p>Latent memory: {html.escape(note)}.</p>"
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
        "<p>Mean squared error of each candidate's latents on revisit frames, per level (level 0 finest). A method "
        "with memory is below context_mean and random_frames at the coarse levels, approaching copy_revisited. "
        "Derived levels were re-encoded from the generated finest latents.</p>"
        f"<table><tr><th>candidate</th>{header}</tr>{''.join(rows)}</table>"
    )


def memory_cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "–"
    cell = interval_cell(entry["mse"]) + (" <small>(derived)</small>" if entry["derived"] else "")
    if entry.get("vs_context_mean"):
        cell += f"<br><small>− context_mean: {interval_cell(entry['vs_context_mean'])}</small>"
    return cell


def interval_cell(value: Mapping[str, Any] | None) -> str:
    if not value or value.get("mean") is None:
        return "–"
    low, high = value.get("ci_low"), value.get("ci_high")
    band = f" <small>[{low:.3f}, {high:.3f}]</small>" if low is not None and high is not None else ""
    return f"{value['mean']:.3f}{band}"
