"""Rollouts side by side: per example, every selected run's video on one clock, with play/pause,
frame steps, a scrub bar, "next revisit" and a timeline marking the context and revisit frames."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from millivid_dashboards.charts import Palette
from millivid_dashboards.page import Page, escape
from millivid_dashboards.rollout_view import Clip, Player, timeline_figure

VIDEO_NOTE = ("Each video shows the last context frames in every column, then the ground truth and what each method "
              "and reference line generated, in the order of the labels above the columns.")


def rollouts_page(players: Sequence[Player], palette: Palette, site: Path) -> Page:
    page = Page("rollouts.html", "Rollouts side by side")
    if not players:
        page.add("<p>No run has showcase videos (eval.videos = 0, or no evaluation).</p>")
        return page
    page.add(f"<p>{VIDEO_NOTE} The videos of one example play together; the timeline marks the context (shaded), the "
             "revisit frames, and for each method whether the revisited frame was within its reach (filled) or not (open). "
             "Click a mark to jump to it.</p>")
    for player in players:
        page.add(player_section(page, player, palette, site))
    return page


def player_section(page: Page, player: Player, palette: Palette, site: Path) -> str:
    window = player.window
    heading = (f"Example {player.example}: episode {window['episode']}, context from frame {window['start']}, "
               f"{len(player.revisit_of)} revisit frames")
    controls = (
        "<div class='controls'><button data-action='play'>▶ play</button>"
        "<button data-action='previous' title='one frame back'>◀</button><button data-action='next' title='one frame on'>▶</button>"
        "<button data-action='revisit'>next revisit ▶▶</button>"
        f"<input type='range' class='scrub' min='0' max='{player.frames - 1}' value='0' aria-label='video frame'>"
        "<span class='position'></span></div>"
    )
    clips = "".join(clip_figure(clip, site) for clip in player.clips)
    revisits = json.dumps(sorted(player.revisit_of.items()))
    return (f"<section class='player' data-fps='{player.fps}' data-frames='{player.frames}' "
            f"data-context-shown='{player.context_shown}' data-context='{player.context}' data-revisits='{escape(revisits)}'>"
            f"<h3>{escape(heading)}</h3>{controls}{page.chart(timeline_figure(player, palette), 'chart timeline')}"
            f"<div class='videos'>{clips}</div></section>")


def clip_figure(clip: Clip, site: Path) -> str:
    video = copy_media(clip.video, clip.source_run_id, site)
    strip = ""
    if clip.strip is not None:
        picture = copy_media(clip.strip, clip.source_run_id, site)
        strip = (f"<details><summary>strip: evenly spaced rollout frames</summary>"
                 f"<img class='pixels' loading='lazy' src='{escape(picture)}' alt='rollout strip'></details>")
    return (f"<figure data-runs='{escape(' '.join(clip.run.keys))}'><figcaption>{escape(clip.run.label)}</figcaption>"
            f"<video src='{escape(video)}' muted playsinline preload='metadata'></video>{strip}</figure>")


def copy_media(path: Path, source_run_id: str, site: Path) -> str:
    """Into media/<source run>/ once (runs sharing an evaluation share its files); returns the relative path."""
    relative = f"media/{source_run_id[:12]}/{path.name}"
    target = site / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return relative
