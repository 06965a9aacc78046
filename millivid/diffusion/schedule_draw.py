"""Pictures of a schedule as the paper draws it: frames as columns, levels as rows (coarsest on top).

`schedule_gif` animates one picture per step, `schedule_html` is a self-contained page doing the
same in the browser, `schedule_overview_png` stacks every step of the chunk in one still image,
`plan_png` stacks every model call of a rollout plan over absolute frames (lines mark the end of
the ground-truth context and the last wanted frame). `write_schedule_picture` picks the format
from the file extension. All take the very Schedule (and plan) the sampler rolls out, so what is
drawn is what runs. Under a chunk, frame numbers count from its first new frame (0 = where step 0
starts denoising); under a plan they are absolute.
"""

from __future__ import annotations

import io
import json
from pathlib import PurePosixPath

import numpy as np
from einops import repeat
from PIL import Image, ImageColor, ImageDraw, ImageFont

from millivid import storage
from millivid.diffusion.plan import PlannedStep, frames_needed
from millivid.diffusion.schedule_core import CONTEXT, DENOISED, UNSEEN, Schedule, ScheduleError

COLOURS = {UNSEEN: "#ececec", CONTEXT: "#4c78a8", DENOISED: "#f58518"}
NAMES = {UNSEEN: "unseen", CONTEXT: "context", DENOISED: "denoised"}
PALETTE = np.array(
    [ImageColor.getrgb(COLOURS[value]) for value in (UNSEEN, CONTEXT, DENOISED)], dtype=np.uint8
)
LABEL_WIDTH, ROW_HEIGHT, TITLE_HEIGHT, FOOTER_HEIGHT, MARGIN = 150, 22, 30, 44, 10
FORMATS = (".gif", ".html", ".png")


def font(size: int = 12) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def cell_width(span: int, pixels: int = 1000) -> int:
    """Pixels per frame column so that `span` frames fit in about `pixels`."""
    return int(np.clip(pixels // max(span, 1), 1, 16))


def level_labels(schedule: Schedule) -> list[str]:
    return [
        f"level {level} · {tokens} tok" for level, tokens in enumerate(schedule.tokens_per_level)
    ]


def grid_pixels(matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """(levels*height, span*width, 3) uint8 picture of a (levels, span) matrix, coarsest row on top.

    Cells wider/taller than 4 pixels keep a 1-pixel white seam so single frames stay countable.
    """
    cells = PALETTE[matrix[::-1]]
    pixels = repeat(cells, "l s c -> (l h) (s w) c", h=height, w=width).copy()
    if height > 4:
        pixels[np.arange(pixels.shape[0]) % height == height - 1] = 255
    if width > 4:
        pixels[:, np.arange(pixels.shape[1]) % width == width - 1] = 255
    return pixels


def canvas(columns: int, width: int, grid_height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    size = (LABEL_WIDTH + columns * width + MARGIN, TITLE_HEIGHT + grid_height + FOOTER_HEIGHT)
    image = Image.new("RGB", size, "white")
    return image, ImageDraw.Draw(image)


def draw_axis(
    draw: ImageDraw.ImageDraw, columns: int, first_label: int, top: int, width: int
) -> None:
    """Frame numbers under the grid; column j is labelled first_label + j, ticks at powers of two."""
    every = 1 << int(np.ceil(np.log2(max(columns / 12, 1))))
    for column in range(columns):
        if (column + first_label) % every == 0:
            x = LABEL_WIDTH + column * width + width // 2
            draw.line((x, top, x, top + 4), fill="#555555")
            draw.text(
                (x, top + 6), str(column + first_label), fill="#333333", font=font(10), anchor="mt"
            )


def draw_legend(draw: ImageDraw.ImageDraw, top: int) -> None:
    for position, value in enumerate((CONTEXT, DENOISED, UNSEEN)):
        x = LABEL_WIDTH + position * 110
        draw.rectangle((x, top, x + 12, top + 12), fill=COLOURS[value], outline="#999999")
        draw.text((x + 18, top), NAMES[value], fill="#222222", font=font(12))


def step_picture(schedule: Schedule, index: int) -> Image.Image:
    """One step: title with its level and tokens, the grid, frame numbers and a legend."""
    width = cell_width(schedule.span)
    grid_height = schedule.levels * ROW_HEIGHT
    image, draw = canvas(schedule.span, width, grid_height)
    title = (
        f"{schedule.name} ({schedule.kind}) · step {index + 1}/{len(schedule.steps)} · denoise level "
        f"{schedule.denoised_level(index)} · {schedule.tokens_per_step[index]} tokens · "
        f"+{schedule.stride} frames/chunk · reach {schedule.reach.overall} frames"
    )
    draw.text((MARGIN, 8), title, fill="black", font=font(13))
    for level, label in enumerate(level_labels(schedule)):
        top = TITLE_HEIGHT + (schedule.levels - 1 - level) * ROW_HEIGHT + 4
        draw.text((MARGIN, top), label, fill="#222222", font=font(12))
    image.paste(
        Image.fromarray(grid_pixels(schedule.steps[index], width, ROW_HEIGHT)),
        (LABEL_WIDTH, TITLE_HEIGHT),
    )
    draw_axis(
        draw, schedule.span, -schedule.first_denoised_column, TITLE_HEIGHT + grid_height, width
    )
    draw_legend(draw, TITLE_HEIGHT + grid_height + 24)
    return image


def schedule_gif(schedule: Schedule, frame_ms: int = 250) -> bytes:
    """Animated GIF, one picture per step, looping."""
    pictures = [
        step_picture(schedule, index).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
        for index in range(len(schedule.steps))
    ]
    buffer = io.BytesIO()
    pictures[0].save(
        buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0
    )
    return buffer.getvalue()


def stacked_png(
    title: str,
    matrices: list[np.ndarray],
    labels: list[str],
    first_label: int,
    marks: tuple[int, ...] = (),
) -> bytes:
    """Matrices stacked top to bottom, one band per step, with a label per band where it fits."""
    levels, columns = matrices[0].shape
    width = cell_width(columns, 1200)
    row = int(np.clip(2400 // (len(matrices) * levels), 1, 5))
    band = levels * row + (2 if row > 1 else 1)
    image, draw = canvas(columns, width, len(matrices) * band)
    draw.text((MARGIN, 8), title, fill="black", font=font(13))
    every = max(1, int(np.ceil(12 / band)))
    for position, (matrix, label) in enumerate(zip(matrices, labels, strict=True)):
        top = TITLE_HEIGHT + position * band
        image.paste(Image.fromarray(grid_pixels(matrix, width, row)), (LABEL_WIDTH, top))
        if position % every == 0:
            draw.text((MARGIN, top), label, fill="#222222", font=font(10))
    bottom = TITLE_HEIGHT + len(matrices) * band
    for column in marks:
        x = LABEL_WIDTH + (column - first_label) * width - 1
        draw.line((x, TITLE_HEIGHT, x, bottom), fill="#222222", width=1)
    draw_axis(draw, columns, first_label, bottom, width)
    draw_legend(draw, bottom + 24)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def schedule_overview_png(schedule: Schedule) -> bytes:
    """Every step of the chunk stacked top to bottom (coarsest row on top within each step)."""
    title = (
        f"{schedule.name} ({schedule.kind}) · {len(schedule.steps)} steps · max {schedule.max_tokens} tokens/step"
        f" · reach {schedule.reach.overall} frames"
    )
    labels = [
        f"step {index} · level {schedule.denoised_level(index)}"
        for index in range(len(schedule.steps))
    ]
    return stacked_png(title, list(schedule.steps), labels, -schedule.first_denoised_column)


def plan_png(
    schedule: Schedule, plan: list[PlannedStep], context_frames: int, total_frames: int
) -> bytes:
    """Every model call of a rollout over absolute frames [0, frames_needed)."""
    if not plan:
        raise ScheduleError(f"plan of {schedule.name!r}: nothing to draw, no frame to generate")
    columns = max(frames_needed(plan), total_frames)
    matrices = []
    for step in plan:
        absolute = np.full((schedule.levels, columns), UNSEEN, dtype=np.int8)
        inside = (step.frames >= 0) & (
            step.frames < columns
        )  # beyond frames_needed all cells are UNSEEN
        absolute[:, step.frames[inside]] = step.matrix[:, inside]
        matrices.append(absolute)
    title = (
        f"{schedule.name} ({schedule.kind}) rollout · {context_frames} context frames to {total_frames} · "
        f"{len(plan)} model calls · needs frames up to {frames_needed(plan)}"
    )
    labels = [f"chunk {step.chunk} · step {step.index} · L{step.level}" for step in plan]
    return stacked_png(title, matrices, labels, 0, marks=(context_frames, total_frames))


def schedule_html(schedule: Schedule) -> str:
    """A self-contained page animating the steps on a canvas (play/pause, step slider)."""
    data = {
        "title": f"{schedule.name} ({schedule.kind}) · reach {schedule.reach.overall} frames",
        "labels": level_labels(schedule),
        "steps": [step.tolist() for step in schedule.steps],
        "levels": [schedule.denoised_level(i) for i in range(len(schedule.steps))],
        "tokens": schedule.tokens_per_step,
        "origin": schedule.first_denoised_column,
        "stride": schedule.stride,
        "colours": [COLOURS[UNSEEN], COLOURS[CONTEXT], COLOURS[DENOISED]],
        "cell": cell_width(schedule.span),
    }
    return HTML_TEMPLATE.replace("__TITLE__", data["title"]).replace("__DATA__", json.dumps(data))


def write_schedule_picture(schedule: Schedule, uri: str, frame_ms: int = 250) -> None:
    """Write a .gif, .html or .png (overview) picture of `schedule` atomically."""
    suffix = PurePosixPath(uri).suffix.lower()
    if suffix == ".gif":
        storage.write_bytes(uri, schedule_gif(schedule, frame_ms))
    elif suffix == ".html":
        storage.write_bytes(uri, schedule_html(schedule).encode())
    elif suffix == ".png":
        storage.write_bytes(uri, schedule_overview_png(schedule))
    else:
        raise ScheduleError(
            f"{uri}: unknown picture format {suffix!r}; use one of {', '.join(FORMATS)}"
        )


HTML_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>__TITLE__</title>
<style>body{font-family:sans-serif;margin:16px}canvas{display:block;margin:8px 0}
.key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 14px;vertical-align:middle}</style></head>
<body><h3 id="title"></h3>
<div><button id="play">pause</button> <button id="prev">&lt;</button> <button id="next">&gt;</button>
<input id="slider" type="range" min="0" value="0" style="width:420px"> <span id="info"></span></div>
<canvas id="grid"></canvas>
<div class="key"><span id="k1"></span>context<span id="k2"></span>denoised<span id="k0"></span>unseen</div>
<script>
const D = __DATA__;
const L = D.labels.length, span = D.steps[0][0].length, W = D.cell, H = 22, left = 150, top = 4;
const canvas = document.getElementById("grid"), ctx = canvas.getContext("2d");
canvas.width = left + span * W + 10; canvas.height = top + L * H + 26;
const slider = document.getElementById("slider"); slider.max = D.steps.length - 1;
for (let v = 0; v < 3; v++) document.getElementById("k" + v).style.background = D.colours[v];
let index = 0, playing = true;
function draw() {
  const m = D.steps[index];
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "12px sans-serif"; ctx.fillStyle = "#222";
  for (let l = 0; l < L; l++) {
    const y = top + (L - 1 - l) * H;
    ctx.fillStyle = "#222"; ctx.fillText(D.labels[l], 4, y + 15);
    for (let c = 0; c < span; c++) {
      ctx.fillStyle = D.colours[m[l][c]];
      ctx.fillRect(left + c * W, y, Math.max(1, W - (W >= 5 ? 1 : 0)), H - 2);
    }
  }
  const tick = Math.pow(2, Math.ceil(Math.log2(Math.max(span / 12, 1))));
  ctx.fillStyle = "#333"; ctx.font = "10px sans-serif"; ctx.textAlign = "center";
  for (let c = 0; c < span; c++) if ((c - D.origin) % tick === 0) ctx.fillText(String(c - D.origin), left + c * W + W / 2, top + L * H + 14);
  ctx.textAlign = "left";
  document.getElementById("title").textContent = D.title + " · +" + D.stride + " frames per chunk";
  document.getElementById("info").textContent = "step " + (index + 1) + "/" + D.steps.length + " · denoise level " + D.levels[index] + " · " + D.tokens[index] + " tokens";
  slider.value = index;
}
function go(i) { index = (i + D.steps.length) % D.steps.length; draw(); }
document.getElementById("play").onclick = (e) => { playing = !playing; e.target.textContent = playing ? "pause" : "play"; };
document.getElementById("prev").onclick = () => go(index - 1);
document.getElementById("next").onclick = () => go(index + 1);
slider.oninput = () => go(Number(slider.value));
setInterval(() => { if (playing) go(index + 1); }, 250);
draw();
</script></body></html>
"""
