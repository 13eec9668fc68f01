"""The pictures of ``comit viz``, drawn with PIL from what a :class:`~comit.viz.trace.Trace` holds.

PIL rather than matplotlib: it is already a core dependency, it draws a 64-px image with boxes and
arrows in milliseconds, and ``comit demo`` must run on a bare install in about a minute.

Small images are upscaled by an integer factor with nearest-neighbour filtering, so every image
pixel stays a square block (no detail is invented) and the boxes land on exact pixel boundaries.
Figures carry no titles: the HTML report and the web app caption them.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..data.images import to_pil
from ..model.crops import Box
from .trace import Trace

# Target sizes in display pixels: the crop path and overlays are the main pictures, panels of the
# strips and grids are smaller so a row of ten still fits a screen.
DISPLAY_SIZE = 256
PANEL_SIZE = 128

BACKGROUND = (255, 255, 255)
INK = (25, 25, 25)
MUTED = (110, 110, 110)
# One colour per crop step (cycled), distinct on the shapes data and on photos.
CROP_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]
# Anchors of the viridis colour map (dark blue = no attention, yellow = the map's maximum).
VIRIDIS = np.array([(68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
                    (31, 158, 137), (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37)],
                   dtype=np.float64)
EMPTY_TOKEN_COLOUR = (225, 225, 225)
GOLDEN_RATIO = 0.6180339887498949

PANEL_GAP = 8
CAPTION_FONT = 12


# ---------------------------------------------------------------------- basics
@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def display_scale(image_size: int, target: int = DISPLAY_SIZE) -> int:
    """Integer upscaling factor that brings an image near ``target`` pixels (never below 1)."""
    return max(1, round(target / image_size))


def upscale(image: torch.Tensor | Image.Image, scale: int) -> Image.Image:
    """[3, S, S] tensor in [-1, 1] (or a PIL image) -> RGB image ``scale`` times larger, nearest."""
    picture = to_pil(image) if isinstance(image, torch.Tensor) else image.convert("RGB")
    if scale == 1:
        return picture
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def crop_colour(step: int) -> tuple[int, int, int]:
    return CROP_COLOURS[step % len(CROP_COLOURS)]


def box_centre(box: Box, scale: int) -> tuple[float, float]:
    return ((box.left + box.size / 2) * scale, (box.top + box.size / 2) * scale)


# ---------------------------------------------------------------------- crop path
def crop_path(trace: Trace, scale: int | None = None) -> Image.Image:
    """The image with the observed crops as numbered boxes (1 = first) and the offsets as arrows.

    A solid arrow in crop k's colour goes from crop k-1's centre to crop k's: the offset
    ``a_k = loc_k - loc_{k-1}`` the message update received. The dashed grey arrow goes from the
    last crop's centre to the image centre: the decoding offset ``-loc_K``.
    """
    size = trace.image.shape[-1]
    scale = scale or display_scale(size)
    canvas = upscale(trace.image, scale)
    draw = ImageDraw.Draw(canvas)
    width = max(2, scale // 2 + 1)
    for step, box in enumerate(trace.boxes):
        draw_box(draw, box, scale, crop_colour(step), width)
    centres = [box_centre(box, scale) for box in trace.boxes]
    for step in range(1, len(centres)):
        draw_arrow(draw, centres[step - 1], centres[step], crop_colour(step), width)
    if centres:
        middle = (size * scale / 2, size * scale / 2)
        draw_arrow(draw, centres[-1], middle, (128, 128, 128), max(1, width - 1), dashed=True)
    for step, centre in enumerate(centres):
        radius = width + 1
        draw.ellipse([centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius],
                     fill=crop_colour(step), outline=BACKGROUND)
    for step, box in enumerate(trace.boxes):
        draw_step_label(draw, box, size, scale, step)
    return canvas


def draw_box(draw: ImageDraw.ImageDraw, box: Box, scale: int, colour, width: int) -> None:
    left, top = box.left * scale, box.top * scale
    right, bottom = (box.left + box.size) * scale - 1, (box.top + box.size) * scale - 1
    draw.rectangle([left, top, right, bottom], outline=colour, width=width)


def draw_step_label(draw: ImageDraw.ImageDraw, box: Box, image_size: int, scale: int, step: int) -> None:
    """The crop's number in a filled tag at its top-left corner; the global crop (the whole image)
    puts it top-right, where no local crop's tag can sit (local crops share the top-left corner)."""
    text = str(step + 1)
    label_font = font(max(11, 4 * scale))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=label_font)
    pad = 3
    tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
    x = box.left * scale
    if box.size == image_size:
        x = image_size * scale - tag_w
    y = box.top * scale
    draw.rectangle([x, y, x + tag_w - 1, y + tag_h - 1], fill=crop_colour(step))
    draw.text((x + pad - left, y + pad - top), text, fill=BACKGROUND, font=label_font)


def draw_arrow(draw: ImageDraw.ImageDraw, start, end, colour, width: int, dashed: bool = False) -> None:
    """A straight arrow; nothing when start and end coincide (a zero offset)."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    if length < 1:
        return
    ux, uy = dx / length, dy / length
    head = min(4 * width + 4, length / 2)
    shaft_end = (end[0] - ux * head * 0.8, end[1] - uy * head * 0.8)
    if dashed:
        dash = 3 * width + 2
        for start_at in np.arange(0, length - head, 2 * dash):
            stop_at = min(start_at + dash, length - head * 0.8)
            draw.line([(start[0] + ux * start_at, start[1] + uy * start_at),
                       (start[0] + ux * stop_at, start[1] + uy * stop_at)], fill=colour, width=width)
    else:
        draw.line([start, shaft_end], fill=colour, width=width)
    side = head * 0.55
    draw.polygon([end, (end[0] - ux * head - uy * side, end[1] - uy * head + ux * side),
                  (end[0] - ux * head + uy * side, end[1] - uy * head - ux * side)], fill=colour)


# ---------------------------------------------------------------------- panels
@dataclass
class Panel:
    image: Image.Image
    caption: list[str]


def panel_grid(panels: list[Panel], columns: int) -> Image.Image:
    """Panels in rows of ``columns``, each with its caption lines below it, on white."""
    if not panels:
        raise ValueError("panel_grid needs at least one panel")
    caption_font = font(CAPTION_FONT)
    line_height = CAPTION_FONT + 4
    lines = max(len(panel.caption) for panel in panels)
    cell_w = max(panel.image.width for panel in panels)
    cell_h = max(panel.image.height for panel in panels) + lines * line_height + 4
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    canvas = Image.new("RGB", (columns * cell_w + (columns + 1) * PANEL_GAP,
                               rows * cell_h + (rows + 1) * PANEL_GAP), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index, panel in enumerate(panels):
        x = PANEL_GAP + (index % columns) * (cell_w + PANEL_GAP)
        y = PANEL_GAP + (index // columns) * (cell_h + PANEL_GAP)
        canvas.paste(panel.image, (x, y))
        for line, text in enumerate(panel.caption):
            draw.text((x, y + panel.image.height + 3 + line * line_height), fit_text(draw, text, cell_w, caption_font),
                      fill=INK if line == 0 else MUTED, font=caption_font)
    return canvas


def fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, text_font) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    while text and draw.textlength(text, font=text_font) > width:
        text = text[:-2] + "…" if len(text) > 1 else ""
    return text


# ---------------------------------------------------------------------- one-step strip
def one_step_strip(trace: Trace, columns: int = 6) -> Image.Image:
    """Input, the one-step reconstruction after each crop (the crops seen so far outlined, the
    newest one thick), and the full reconstruction, each with its PSNR against the input."""
    scale = display_scale(trace.image.shape[-1], PANEL_SIZE)
    panels = [Panel(upscale(trace.image, scale), ["input", f"{len(trace.boxes)} crops"])]
    for step, (probe, quality) in enumerate(zip(trace.one_step, trace.one_step_psnr())):
        picture = upscale(probe, scale)
        draw = ImageDraw.Draw(picture)
        for earlier in range(step):
            draw_box(draw, trace.boxes[earlier], scale, crop_colour(earlier), 1)
        draw_box(draw, trace.boxes[step], scale, crop_colour(step), max(2, scale))
        panels.append(Panel(picture, [f"after crop {step + 1} (#{trace.crop_indices[step]})",
                                      "1 step · w=1", format_psnr(quality)]))
    settings = trace.settings
    panels.append(Panel(upscale(trace.reconstruction, scale),
                        ["reconstruction", f"{settings.steps} steps · w={settings.cfg:g}",
                         format_psnr(trace.reconstruction_psnr())]))
    return panel_grid(panels, columns)


def format_psnr(value: float) -> str:
    return "PSNR inf" if math.isinf(value) else f"PSNR {value:.1f} dB"


# ---------------------------------------------------------------------- attention
def colour_map(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (shape + [3]) along viridis."""
    position = np.clip(values, 0.0, 1.0) * (len(VIRIDIS) - 1)
    low = np.floor(position).astype(int).clip(0, len(VIRIDIS) - 2)
    fraction = (position - low)[..., None]
    return np.round(VIRIDIS[low] * (1 - fraction) + VIRIDIS[low + 1] * fraction).astype(np.uint8)


def normalised(attention_map: torch.Tensor) -> np.ndarray:
    """A map scaled so its maximum is 1: each panel uses its own colour range."""
    values = attention_map.detach().float().cpu().numpy()
    peak = values.max()
    return values / peak if peak > 0 else np.zeros_like(values)


def attention_heatmap(attention_map: torch.Tensor, size: int) -> Image.Image:
    """One token's map over the patch grid [h, w] as a colour image ``size`` px wide (nearest:
    each patch stays a block)."""
    heat = Image.fromarray(colour_map(normalised(attention_map)))
    return heat.resize((size, size), Image.Resampling.NEAREST)


def attention_overlay(image: torch.Tensor, attention_map: torch.Tensor, scale: int | None = None) -> Image.Image:
    """The image dimmed where the token does not look, coloured by the map where it does."""
    scale = scale or display_scale(image.shape[-1])
    base = np.asarray(upscale(image, scale), dtype=np.float64)
    size = base.shape[0]
    values = np.asarray(Image.fromarray((normalised(attention_map) * 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.NEAREST), dtype=np.float64)[..., None] / 255
    heat = colour_map(values[..., 0]).astype(np.float64)
    alpha = 0.3 + 0.5 * values  # where the token does not look the image stays visible, only tinted
    blended = base * (1 - alpha) + heat * alpha
    return Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8))


def attention_grid(trace: Trace, positions: list[int], columns: int = 4) -> Image.Image:
    """Heat maps of the given message positions (e.g. the top tokens), captioned with position,
    id and spread (the effective number of patches the token looks at)."""
    if not positions:
        raise ValueError("attention_grid needs at least one token position")
    size = display_scale(trace.image.shape[-1], PANEL_SIZE) * trace.image.shape[-1]
    panels = []
    for position in positions:
        attention_map = trace.attention[position]
        panels.append(Panel(attention_heatmap(attention_map, size),
                            [f"token #{position} · id {int(trace.ids[position])}",
                             f"spread {attention_spread(attention_map):.1f} patches"]))
    return panel_grid(panels, columns)


def attention_spread(attention_map: torch.Tensor) -> float:
    """exp(entropy): 1 when a token looks at one patch, the patch count when it looks everywhere."""
    values = attention_map.flatten().double().clamp_min(1e-12)
    values = values / values.sum()
    return float(torch.exp(-(values * values.log()).sum()))


# ---------------------------------------------------------------------- token ids
@dataclass(frozen=True)
class TokenGridLayout:
    """Where each message position sits in :func:`token_grid` (row-major, position 0 top-left)."""

    num_tokens: int
    columns: int
    cell_width: int = 62
    cell_height: int = 34
    margin: int = 4

    @classmethod
    def for_tokens(cls, num_tokens: int) -> "TokenGridLayout":
        return cls(num_tokens=num_tokens, columns=max(1, math.ceil(math.sqrt(num_tokens))))

    @property
    def rows(self) -> int:
        return -(-self.num_tokens // self.columns)

    @property
    def size(self) -> tuple[int, int]:
        return (self.columns * self.cell_width + 2 * self.margin, self.rows * self.cell_height + 2 * self.margin)

    def cell(self, position: int) -> tuple[int, int, int, int]:
        x = self.margin + (position % self.columns) * self.cell_width
        y = self.margin + (position // self.columns) * self.cell_height
        return (x, y, x + self.cell_width - 1, y + self.cell_height - 1)

    def position_at(self, x: float, y: float) -> int | None:
        """The message position under pixel (x, y) of the drawn grid, or None between/outside cells."""
        column = math.floor((x - self.margin) / self.cell_width)
        row = math.floor((y - self.margin) / self.cell_height)
        if not (0 <= column < self.columns and 0 <= row < self.rows):
            return None
        position = row * self.columns + column
        return position if position < self.num_tokens else None


def token_colour(token_id: int, empty_id: int) -> tuple[int, int, int]:
    """Equal ids get equal colours; neighbouring ids get distant hues (golden-ratio steps).
    Positions still holding the empty message's id are grey: they carry nothing yet."""
    if token_id == empty_id:
        return EMPTY_TOKEN_COLOUR
    red, green, blue = colorsys.hsv_to_rgb((token_id * GOLDEN_RATIO) % 1.0, 0.42, 0.97)
    return (round(red * 255), round(green * 255), round(blue * 255))


def token_grid(trace: Trace, highlight: list[int] = ()) -> Image.Image:
    """The message's token ids in a near-square grid (row-major by position); ``highlight``
    positions get a thick frame."""
    layout = TokenGridLayout.for_tokens(trace.num_tokens)
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    id_font, position_font = font(13), font(9)
    for position, token_id in enumerate(int(i) for i in trace.ids):
        left, top, right, bottom = layout.cell(position)
        draw.rectangle([left + 1, top + 1, right - 1, bottom - 1], fill=token_colour(token_id, trace.empty_id),
                       outline=INK if position in highlight else BACKGROUND, width=3 if position in highlight else 1)
        draw.text((left + 5, top + 3), f"#{position}", fill=MUTED, font=position_font)
        text = str(token_id)
        width = draw.textlength(text, font=id_font)
        draw.text((left + (layout.cell_width - width) / 2, top + 14), text, fill=INK, font=id_font)
    return canvas
