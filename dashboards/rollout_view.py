"""Rollouts side by side: each run's showcase video of an example, played in step, on a timeline
that marks the context and the revisit frames.

    players = rollout_players(runs_with_tables)      # list[Player], one per example window
    figure = timeline_figure(player, palette)

An evaluation's showcase video (videos/example-NNNN.mp4) shows the last `video_context` context
frames in every column, then ground truth | each method | each reference line. Runs whose example
is the same window (episode and start) share one player, so their videos play together; the revisit
frames are the window's (a property of the ground-truth camera path), and the within/out-of-reach
marks are each method's as the first of those runs evaluated it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go

from millivid.eval.tables import where
from millivid_dashboards.charts import Palette, RunStyle, style
from millivid_dashboards.collect import Evaluation
from millivid_dashboards.curves import EvaluationTables

CONTEXT_SHADE = "rgba(76,120,168,0.15)"
REVISIT_COLOUR = "#222222"


@dataclass(frozen=True)
class Clip:
    run: RunStyle
    video: Path
    strip: Path | None
    source_run_id: str  # whose evaluation made it: runs sharing one share the file


@dataclass
class Player:
    example: int
    window: dict  # the example's episode, start, seed, revisits (millivid.eval.protocol.Example)
    fps: int
    context_shown: int  # context frames at the start of the video
    frames: int  # video frames: context shown + rollout
    revisit_of: dict[int, int]  # video frame -> the context frame (index in the window) it revisits
    within_reach: dict[str, dict[int, bool]]  # method -> video frame -> whether its revisit was within reach
    context: int  # context frames of the window
    clips: list[Clip] = field(default_factory=list)

    def describe(self, frame: int) -> str:
        if frame < self.context_shown:
            return f"context frame {self.context - self.context_shown + frame}"
        return f"rollout frame {frame - self.context_shown}"


def example_of(video: Path) -> int:
    return int(video.stem.rsplit("-", 1)[-1])


def rollout_players(items: list[tuple[RunStyle, EvaluationTables, Evaluation]]) -> list[Player]:
    """items: (run, its evaluation's tables, its collect.Evaluation) -> players in example order."""
    players: dict[str, Player] = {}
    for run, tables, evaluation in items:
        protocol = tables.summary["protocol"]
        for video in evaluation.videos():
            example = example_of(video)
            window = protocol["windows"][example]
            key = json.dumps([example, window["episode"], window["start"]])
            if key not in players:
                players[key] = new_player(tables, example, window)
            players[key].clips.append(Clip(run, video, evaluation.strip(video), evaluation.source_run_id))
    return sorted(players.values(), key=lambda player: player.example)


def new_player(tables: EvaluationTables, example: int, window: dict) -> Player:
    protocol = tables.summary["protocol"]
    shown = min(protocol["video_context"], protocol["context"])
    rows = where(tables.rows, example=example)
    truth = where(rows, method=[*tables.methods, *tables.references][0]).sort_by("frame")  # revisits: the same in every line
    revisit_of = {int(frame) + shown: int(context) for frame, context in
                  zip(truth["frame"].to_numpy(), truth["revisit_of"].to_numpy(), strict=True) if context >= 0}
    within = {}
    for method in tables.methods:
        table = where(rows, method=method).sort_by("frame")
        reach = zip(table["frame"].to_numpy() + shown, table["within_reach"].to_pylist(), strict=True)
        within[method] = {int(frame): bool(value) for frame, value in reach if value is not None}
    return Player(example, window, protocol["fps"], shown, shown + protocol["rollout"], revisit_of,
                  {method: marks for method, marks in within.items() if marks}, protocol["context"])


def timeline_figure(player: Player, palette: Palette) -> go.Figure:
    """Rows: the revisit frames, then each method's within (filled) / out of reach (open) marks;
    shape 1 is the playback cursor the page moves."""
    rows = ["revisit", *player.within_reach]  # top to bottom; numeric positions keep empty rows labelled
    height = {row: len(rows) - 1 - index for index, row in enumerate(rows)}
    figure = go.Figure()
    revisits = sorted(player.revisit_of)
    figure.add_trace(go.Scatter(
        x=revisits, y=[height["revisit"]] * len(revisits), mode="markers", name="revisit frame",
        marker={"symbol": "line-ns-open", "size": 14, "color": REVISIT_COLOUR, "line": {"width": 2}},
        customdata=[[player.describe(frame), player.revisit_of[frame]] for frame in revisits],
        hovertemplate="%{customdata[0]} revisits context frame %{customdata[1]}<extra></extra>",
    ))
    for method, marks in player.within_reach.items():
        frames = sorted(marks)
        colour = palette.colour(method)
        figure.add_trace(go.Scatter(
            x=frames, y=[height[method]] * len(frames), mode="markers", name=method, showlegend=False,
            marker={"symbol": ["circle" if marks[frame] else "circle-open" for frame in frames], "size": 9, "color": colour},
            customdata=[[player.describe(frame), "within" if marks[frame] else "out of"] for frame in frames],
            hovertemplate=f"{method}: %{{customdata[0]}} is a revisit %{{customdata[1]}} its reach<extra></extra>",
        ))
    figure.add_shape(type="rect", x0=-0.5, x1=player.context_shown - 0.5, y0=0, y1=1, yref="paper",
                     fillcolor=CONTEXT_SHADE, line={"width": 0}, layer="below")
    figure.add_shape(type="line", x0=0, x1=0, y0=0, y1=1, yref="paper", line={"color": "#d62728", "width": 2})
    figure.add_annotation(x=(player.context_shown - 1) / 2, y=1, yref="paper", text="context", showarrow=False,
                          yanchor="bottom", font={"size": 11})
    if not revisits:
        figure.add_annotation(x=(player.context_shown + player.frames) / 2, y=height["revisit"], text="no revisit frames",
                              showarrow=False, font={"color": "#666666"})
    style(figure, "", "video frame (click a mark to jump there)", "", height=70 + 26 * len(rows))
    figure.update_layout(margin={"l": 90, "r": 10, "t": 20, "b": 40}, showlegend=False,
                         xaxis={"range": [-0.5, player.frames - 0.5], "zeroline": False},
                         yaxis={"tickmode": "array", "tickvals": list(height.values()), "ticktext": list(height),
                                "range": [-0.6, len(rows) - 0.4], "fixedrange": True, "zeroline": False, "showgrid": False})
    return figure
