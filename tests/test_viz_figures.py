"""Every figure of ``comit viz`` rendered for a tiny model: sizes, non-blank pixels, geometry."""

import numpy as np
import pytest
import torch
from PIL import Image

from comit.viz import figures
from comit.viz.trace import Trace, VizSettings, top_tokens, trace_images

SCALE = 4  # 64-px images are drawn at 256 px


@pytest.fixture
def trace(tiny_model, tiny_images) -> Trace:
    return trace_images(tiny_model, tiny_images[:1], VizSettings(order=[0, 8, 4], steps=2))[0]


def pixels(picture: Image.Image) -> np.ndarray:
    assert picture.mode == "RGB"
    return np.asarray(picture)


def assert_not_blank(picture: Image.Image) -> None:
    values = pixels(picture).reshape(-1, 3)
    assert len(np.unique(values, axis=0)) > 20, "the figure is (nearly) one colour"


def test_upscale_is_nearest_neighbour(trace):
    picture = figures.upscale(trace.image, SCALE)
    small = pixels(figures.upscale(trace.image, 1))
    assert picture.size == (256, 256)
    assert np.array_equal(pixels(picture)[::SCALE, ::SCALE], small)
    assert np.array_equal(pixels(picture)[3::SCALE, 3::SCALE], small)  # each pixel is a solid 4x4 block


def test_display_scale_is_an_integer_near_the_target():
    assert figures.display_scale(64) == 4 and figures.display_scale(256) == 1 and figures.display_scale(1024) == 1
    assert figures.display_scale(64, figures.PANEL_SIZE) == 2


def test_crop_path_draws_each_box_in_its_step_colour(trace):
    picture = figures.crop_path(trace)
    assert picture.size == (256, 256)
    assert_not_blank(picture)
    array = pixels(picture)
    for step, box in enumerate(trace.boxes):
        # the middle of the box's bottom edge (labels sit at the top, arrows run between centres)
        x = (box.left + box.size // 2) * SCALE + 3
        y = (box.top + box.size) * SCALE - 1
        assert tuple(array[y, x]) == figures.crop_colour(step), f"box {step + 1}"
    # the arrow from crop 1 (#0, centre (12, 12)) to crop 2 (#8, centre (52, 52)) runs along the diagonal
    midway = array[16 * SCALE - 2:16 * SCALE + 3, 16 * SCALE - 2:16 * SCALE + 3].reshape(-1, 3)
    assert any(tuple(colour) == figures.crop_colour(1) for colour in midway)


def test_crop_path_numbers_the_global_crop_top_right(tiny_model, tiny_images):
    trace = trace_images(tiny_model, tiny_images[:1], VizSettings(order=[0, 1], global_crop=True))[0]
    array = pixels(figures.crop_path(trace))
    assert tuple(array[2, 250]) == figures.crop_colour(0)  # tag "1" (the whole image) top-right
    assert tuple(array[2, 6]) == figures.crop_colour(1)  # tag "2" (local crop 0) top-left


def test_one_step_strip_has_a_panel_per_crop(trace):
    strip = figures.one_step_strip(trace, columns=10)
    assert_not_blank(strip)
    panel = 128 + figures.PANEL_GAP
    assert strip.width == 5 * panel + figures.PANEL_GAP  # input, 3 probes, reconstruction
    array = pixels(strip)
    x0, y0 = figures.PANEL_GAP, figures.PANEL_GAP
    assert np.array_equal(array[y0:y0 + 128:2, x0:x0 + 128:2], pixels(figures.upscale(trace.image, 1)))
    last = x0 + 4 * panel
    assert np.array_equal(array[y0:y0 + 128:2, last:last + 128:2], pixels(figures.upscale(trace.reconstruction, 1)))
    wrapped = figures.one_step_strip(trace, columns=2)
    assert wrapped.width == 2 * panel + figures.PANEL_GAP and wrapped.height > 2 * strip.height


def test_attention_heatmap_follows_the_map():
    attention_map = torch.zeros(4, 4)
    attention_map[1, 2] = 1.0
    heat = pixels(figures.attention_heatmap(attention_map, 64))
    assert heat.shape == (64, 64, 3)
    assert tuple(heat[16 + 8, 32 + 8]) == tuple(figures.VIRIDIS[-1].astype(np.uint8))  # the peak: yellow
    assert tuple(heat[0, 0]) == tuple(figures.VIRIDIS[0].astype(np.uint8))  # nothing: dark blue


def test_colour_map_ends_and_clips():
    colours = figures.colour_map(np.array([-1.0, 0.0, 1.0, 2.0]))
    assert colours.dtype == np.uint8 and colours.shape == (4, 3)
    assert np.array_equal(colours[0], colours[1]) and np.array_equal(colours[2], colours[3])
    assert not np.array_equal(colours[1], colours[2])


def test_attention_overlay_shows_the_image_under_the_map(trace):
    position = top_tokens(trace.attention, 1)[0]
    overlay = figures.attention_overlay(trace.image, trace.attention[position])
    assert overlay.size == (256, 256)
    assert_not_blank(overlay)
    flat = torch.full_like(trace.attention[position], 1 / trace.attention[position].numel())
    base = pixels(figures.upscale(trace.image, SCALE)).astype(int)
    uniform = pixels(figures.attention_overlay(trace.image, flat)).astype(int)
    # a uniform map tints every pixel the same way, so the image's structure survives
    assert np.corrcoef(base.sum(-1).ravel(), uniform.sum(-1).ravel())[0, 1] > 0.9


def test_attention_grid_has_a_panel_per_token(trace):
    grid = figures.attention_grid(trace, [0, 1, 2, 3, 4], columns=4)
    assert_not_blank(grid)
    assert grid.width == 4 * (128 + figures.PANEL_GAP) + figures.PANEL_GAP
    one_row = figures.attention_grid(trace, [0, 1], columns=4)
    assert grid.height > 1.8 * one_row.height - figures.PANEL_GAP
    with pytest.raises(ValueError, match="at least one"):
        figures.attention_grid(trace, [])


def test_attention_spread_counts_patches():
    attention_map = torch.zeros(4, 4)
    attention_map[0, :2] = 0.5
    assert figures.attention_spread(attention_map) == pytest.approx(2.0)
    assert figures.attention_spread(torch.ones(4, 4)) == pytest.approx(16.0)


def test_token_grid_cells_carry_the_ids(trace):
    layout = figures.TokenGridLayout.for_tokens(16)
    grid = figures.token_grid(trace, highlight=[5])
    assert grid.size == layout.size and layout.columns == 4 and layout.rows == 4
    array = pixels(grid)
    for position in (0, 7, 15):
        left, top, _, _ = layout.cell(position)
        colour = figures.token_colour(int(trace.ids[position]), trace.empty_id)
        assert tuple(array[top + 30, left + 3]) == colour  # a corner of the cell, clear of the text
    left, top, _, _ = layout.cell(5)
    assert tuple(array[top + 2, left + 10]) == figures.INK  # the highlighted token's frame


def test_token_colours():
    assert figures.token_colour(32000, 32000) == figures.EMPTY_TOKEN_COLOUR
    assert figures.token_colour(17, 32000) == figures.token_colour(17, 32000)
    assert figures.token_colour(17, 32000) != figures.token_colour(18, 32000)


def test_token_grid_layout_maps_clicks_back_to_positions():
    layout = figures.TokenGridLayout.for_tokens(10)  # 4 columns, 3 rows, the last row partly empty
    assert layout.rows == 3
    for position in range(10):
        left, top, right, bottom = layout.cell(position)
        assert layout.position_at((left + right) / 2, (top + bottom) / 2) == position
        assert layout.position_at(left, top) == position and layout.position_at(right, bottom) == position
    left, top, _, _ = layout.cell(9)
    assert layout.position_at(left + layout.cell_width + 5, top + 5) is None  # where position 10 would be
    assert layout.position_at(1, 1) is None and layout.position_at(-5, 10) is None
    assert layout.position_at(layout.size[0] + 3, 10) is None
