"""A method's rollout schedule as an animated plotly chart, drawn from the Schedule object itself.

    figure = schedule_figure(config.schedules["millivid"])

Top: the current step's (levels x frames) matrix, coarsest level on top, columns numbered from the
chunk's first new frame (as `millivid schedule draw` numbers them), the schedule's reach marked
as a bracket ending there. Bottom: tokens of every step, the current one highlighted. Plotly's own
play button and slider step through the chunk (animation frames, one per step).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from millivid.diffusion.schedule import CONTEXT, DENOISED, UNSEEN, Schedule
from millivid.diffusion.schedule_draw import COLOURS, NAMES, level_labels
from millivid_dashboards.charts import style

STEP_COLOUR, CURRENT_COLOUR = "#9ecae1", COLOURS[DENOISED]


def colourscale() -> list[list]:
    """Cell values 0, 1, 2 (UNSEEN, CONTEXT, DENOISED) in the colours of the schedule pictures."""
    bands = []
    for value in (UNSEEN, CONTEXT, DENOISED):
        bands += [[value / 3, COLOURS[value]], [(value + 1) / 3, COLOURS[value]]]
    return bands


def title(schedule: Schedule) -> str:
    reach = schedule.reach
    per_level = ", ".join(f"L{level} {frames}" for level, frames in sorted(reach.per_level.items()))
    return (f"{schedule.name} ({schedule.kind}) · {len(schedule.steps)} steps per chunk · up to {schedule.max_tokens} tokens "
            f"per step · +{schedule.stride} frames per chunk · reach {reach.overall} frames (per level: {per_level})")


def step_colours(count: int, current: int) -> list[str]:
    return [CURRENT_COLOUR if index == current else STEP_COLOUR for index in range(count)]


def schedule_figure(schedule: Schedule) -> go.Figure:
    steps, tokens = len(schedule.steps), schedule.tokens_per_step
    columns = np.arange(schedule.span) - schedule.first_denoised_column
    labels = level_labels(schedule)
    levels = [schedule.denoised_level(index) for index in range(steps)]
    figure = make_subplots(rows=2, cols=1, row_heights=[0.62, 0.38], vertical_spacing=0.2)
    figure.add_trace(go.Heatmap(
        z=np.asarray(schedule.steps[0], dtype=np.int8), x=columns, y=labels, zmin=0, zmax=3, colorscale=colourscale(),
        showscale=False, xgap=1 if schedule.span <= 200 else 0, ygap=2,
        hovertemplate="frame %{x} · %{y}: %{z} (0 unseen, 1 context, 2 denoised)<extra></extra>",
    ), row=1, col=1)
    figure.add_trace(go.Bar(
        x=np.arange(1, steps + 1), y=tokens, marker={"color": step_colours(steps, 0)}, showlegend=False,
        customdata=levels, hovertemplate="step %{x}: denoise level %{customdata}, %{y} tokens<extra></extra>",
    ), row=2, col=1)
    for value in (CONTEXT, DENOISED, UNSEEN):  # legend entries for the cell colours
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=NAMES[value],
                                    marker={"symbol": "square", "size": 12, "color": COLOURS[value]}), row=1, col=1)
    notes = (mark_reach(figure, schedule),)  # a frame's annotations replace all of them: each frame repeats these
    figure.frames = [
        go.Frame(name=str(index), traces=[0, 1], data=[
            go.Heatmap(z=np.asarray(schedule.steps[index], dtype=np.int8)),
            go.Bar(marker={"color": step_colours(steps, index)}),
        ], layout={"annotations": (*notes, step_note(schedule, index))})
        for index in range(steps)
    ]
    style(figure, title(schedule), "", "", height=520)
    figure.update_layout(
        annotations=(*notes, step_note(schedule, 0)),
        xaxis={"title": "frame (0 = the chunk's first new frame)"}, xaxis2={"title": "step", "dtick": max(1, steps // 20)},
        yaxis2={"title": "tokens"}, legend={"orientation": "h", "y": 1.14, "x": 1, "xanchor": "right"},
        margin={"l": 110, "t": 90, "b": 120},
        updatemenus=[{"type": "buttons", "direction": "left", "x": 0, "y": -0.2, "xanchor": "left", "yanchor": "top",
                      "buttons": [
                          {"label": "▶ play", "method": "animate",
                           "args": [None, {"frame": {"duration": 250, "redraw": True}, "fromcurrent": True, "mode": "immediate"}]},
                          {"label": "❚❚ pause", "method": "animate",
                           "args": [[None], {"frame": {"duration": 0, "redraw": False}, "mode": "immediate"}]},
                      ]}],
        sliders=[{"active": 0, "x": 0.18, "len": 0.82, "y": -0.2, "yanchor": "top", "currentvalue": {"prefix": "step "},
                  "steps": [{"label": str(index + 1), "method": "animate",
                             "args": [[str(index)], {"frame": {"duration": 0, "redraw": True}, "mode": "immediate"}]}
                            for index in range(steps)]}],
    )
    return figure


def step_note(schedule: Schedule, index: int) -> dict:
    text = (f"step {index + 1}/{len(schedule.steps)}: denoise level {schedule.denoised_level(index)}, "
            f"{schedule.tokens_per_step[index]} tokens")
    return {"text": text, "xref": "paper", "yref": "paper", "x": 0, "y": 1.1, "showarrow": False,
            "xanchor": "left", "font": {"size": 12}}


def mark_reach(figure: go.Figure, schedule: Schedule) -> dict:
    """A bracket over the frames the schedule sees back from the chunk's first new frame; returns its label."""
    reach = schedule.reach.overall
    figure.add_shape(type="line", x0=-0.5 - reach, x1=-0.5, y0=1.02, y1=1.02, xref="x", yref="y domain",
                     line={"color": "#333333", "width": 2})
    figure.add_shape(type="line", x0=-0.5, x1=-0.5, y0=0, y1=1.02, xref="x", yref="y domain",
                     line={"color": "#333333", "width": 1, "dash": "dot"})
    return {"text": f"reach: {reach} frames", "x": -0.5 - reach / 2, "y": 1.02, "xref": "x", "yref": "y domain",
            "showarrow": False, "yanchor": "bottom", "font": {"size": 11}}
