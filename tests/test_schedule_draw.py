"""Schedule pictures show exactly the cells of the Schedule object they are drawn from."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image, ImageColor

from millivid import storage
from millivid.diffusion.schedule import ScheduleError, build_schedule, frames_needed, plan_rollout
from millivid.diffusion.schedule_draw import (
    COLOURS,
    LABEL_WIDTH,
    ROW_HEIGHT,
    TITLE_HEIGHT,
    cell_width,
    plan_png,
    schedule_gif,
    schedule_html,
    schedule_overview_png,
    step_picture,
    write_schedule_picture,
)
from millivid.diffusion.schedules import FramePackScheduleConfig, MilliVidScheduleConfig

SCHEDULE = build_schedule(MilliVidScheduleConfig(windows=(1, 4, 16), extra_budget=64), (64, 16, 4))


def cell_colour(picture: Image.Image, level: int, column: int, levels: int) -> tuple[int, int, int]:
    width = cell_width(SCHEDULE.span)
    x = LABEL_WIDTH + column * width + width // 2 - 1
    y = TITLE_HEIGHT + (levels - 1 - level) * ROW_HEIGHT + ROW_HEIGHT // 2
    return picture.convert("RGB").getpixel((x, y))


@pytest.mark.parametrize("index", [0, 1, 2, 20])
def test_step_picture_cells_match_the_matrix(index):
    picture = step_picture(SCHEDULE, index)
    matrix = SCHEDULE.steps[index]
    for level in range(SCHEDULE.levels):
        for column in range(SCHEDULE.span):
            assert cell_colour(picture, level, column, SCHEDULE.levels) == ImageColor.getrgb(
                COLOURS[int(matrix[level, column])]
            )


def test_gif_has_one_frame_per_step():
    gif = Image.open(io.BytesIO(schedule_gif(SCHEDULE, frame_ms=100)))
    assert gif.n_frames == len(SCHEDULE.steps) == 21
    gif.seek(20)
    matrix = SCHEDULE.steps[20]
    level, column = (int(i[0]) for i in np.nonzero(matrix == 2))
    assert cell_colour(gif, level, column, SCHEDULE.levels) == ImageColor.getrgb(COLOURS[2])


def test_html_embeds_the_steps():
    page = schedule_html(SCHEDULE)
    data = json.loads(re.search(r"const D = (\{.*?\});\n", page).group(1))
    assert data["steps"] == [step.tolist() for step in SCHEDULE.steps]
    assert data["tokens"] == SCHEDULE.tokens_per_step
    assert page.startswith("<!doctype html>") and "<script src" not in page


def test_overview_png_and_write_by_extension(tmp_path):
    schedule = build_schedule(FramePackScheduleConfig(denoised=1, context=(1, 4, 16)), (64, 16, 4))
    overview = Image.open(io.BytesIO(schedule_overview_png(SCHEDULE)))
    assert (
        overview.width == LABEL_WIDTH + SCHEDULE.span * cell_width(SCHEDULE.span) + 10
        and overview.height > 21 * 10
    )
    for suffix in (".gif", ".html", ".png"):
        write_schedule_picture(schedule, str(tmp_path / f"framepack{suffix}"))
        assert (tmp_path / f"framepack{suffix}").stat().st_size > 100
    write_schedule_picture(schedule, "memory://pictures/framepack.png")
    assert (
        Image.open(io.BytesIO(storage.read_bytes("memory://pictures/framepack.png"))).format
        == "PNG"
    )
    with pytest.raises(ScheduleError, match="unknown picture format"):
        write_schedule_picture(schedule, str(tmp_path / "framepack.jpg"))
    assert not (tmp_path / "framepack.jpg").exists()


def test_plan_png_draws_each_call_at_its_absolute_frames():
    plan = plan_rollout(SCHEDULE, 8, 30)
    picture = Image.open(io.BytesIO(plan_png(SCHEDULE, plan, 8, 30))).convert("RGB")
    columns = frames_needed(plan)
    width = cell_width(columns, 1200)
    row = int(np.clip(2400 // (len(plan) * SCHEDULE.levels), 1, 5))
    band = SCHEDULE.levels * row + (2 if row > 1 else 1)
    assert picture.width == LABEL_WIDTH + columns * width + 10
    for position in (0, len(plan) // 2, len(plan) - 1):
        step = plan[position]
        for level, column in zip(*np.nonzero(step.matrix), strict=True):
            x = LABEL_WIDTH + int(step.frames[column]) * width
            y = TITLE_HEIGHT + position * band + (SCHEDULE.levels - 1 - level) * row
            assert picture.getpixel((x, y)) == ImageColor.getrgb(
                COLOURS[int(step.matrix[level, column])]
            )
    with pytest.raises(ScheduleError, match="nothing to draw"):
        plan_png(SCHEDULE, [], 8, 8)
