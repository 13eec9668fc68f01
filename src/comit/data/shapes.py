"""Procedural multi-object images: the project's offline stand-in for real data.

Each image shows 1-3 (configurable) flat-coloured shapes on a dark background. Every object has a
known shape, colour, size class, centre and visible instance mask, and every ordered pair of
objects has a spatial relation, so the same data serves training a small model, the semantic,
compositional and relational probes, and token-object alignment.

Conventions:
    * ``center`` is the centre of the object's bounding square, ``(x, y)`` in ``[-1, 1]`` with
      ``(-1, -1)`` the top-left corner of the image and ``(1, 1)`` the bottom-right corner (the
      ``grid_sample`` / ``align_corners=False`` convention; y grows downwards).
    * ``relations[i, j]`` describes object ``i`` relative to object ``j`` along the axis on which
      their centres differ most: "left of" / "right of" along x, "above" / "below" along y.
      Layouts are rejected when that axis is ambiguous, so the relation is visible by eye.
    * Objects are painted in index order; later objects lie on top. ``masks`` are the *visible*
      parts, so they are disjoint, and no object has more than ``max_overlap`` of its area hidden.
    * ``label`` is the shape class of the object with the largest visible area.

Item ``i`` depends only on ``(seed, i)`` (``numpy.random.default_rng([seed, i])``), never on the
access order or the DataLoader worker.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .indexing import checked_index

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan")
# Saturated but not pure primaries, chosen to stay far apart in RGB and against the dark background.
COLOR_RGB = (
    (230, 45, 45),
    (40, 190, 60),
    (50, 95, 240),
    (240, 215, 40),
    (215, 55, 215),
    (40, 210, 220),
)
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
BACKGROUNDS = ("noise", "plain")

# Object extent (side of its bounding square) as a fraction of the image side, per size class.
SIZE_RANGES = ((0.15, 0.22), (0.28, 0.38))

SUPERSAMPLE = 4  # sub-pixel samples per pixel side for anti-aliasing
MASK_THRESHOLD = 0.5  # a pixel belongs to an object when at least half of it is covered
PAD = -1  # padding value for absent objects in integer fields

# Layout rules, as fractions of the image side. They keep relations readable by eye: centres must
# be apart along the dominant axis, and that axis must clearly win over the other one.
_MIN_DOMINANT_GAP = 0.10
_MIN_AXIS_MARGIN = 0.04
_MIN_VISIBLE_AREA = 0.005  # fraction of the image area, for tiny images and large max_overlap
_MIN_VISIBLE_PIXELS = 3
_MIN_EXTENT_PIXELS = 4.0
_POSITION_ATTEMPTS = 100
_LAYOUT_ATTEMPTS = 20

# Background: a dark tint plus smooth low-amplitude noise, so the background is never a flat colour.
_BACKGROUND_LEVEL = (0.04, 0.16)
_BACKGROUND_NOISE = 0.05
_NOISE_GRID = 5
_PLAIN_BACKGROUND = 0.10


class ShapesLayoutError(ValueError):
    """The configuration is too crowded to place the requested objects."""


@dataclass(frozen=True)
class ShapesConfig:
    """Parameters of :class:`ShapesDataset`.

    Attributes:
        image_size: side of the square images in pixels (>= 16).
        min_objects, max_objects: the number of objects is uniform in this inclusive range.
        num_images: length of the dataset (items are generated on the fly).
        seed: dataset seed; item ``i`` is generated from ``(seed, i)``.
        background: "noise" (dark tint with smooth noise) or "plain" (flat dark grey).
        max_overlap: largest fraction of an object's area that later objects may hide.
    """

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    num_images: int = 10000
    seed: int = 0
    background: str = "noise"
    max_overlap: float = 0.3

    def __post_init__(self) -> None:
        self._check_types()
        if self.image_size < 16:
            raise ValueError(f"shapes image_size must be at least 16 pixels, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                "shapes needs 1 <= min_objects <= max_objects, got "
                f"min_objects={self.min_objects}, max_objects={self.max_objects}")
        if self.num_images < 1:
            raise ValueError(f"shapes num_images must be at least 1, got {self.num_images}")
        if self.seed < 0:
            raise ValueError(f"shapes seed must be non-negative, got {self.seed}")
        if self.background not in BACKGROUNDS:
            raise ValueError(
                f"shapes background must be one of {BACKGROUNDS}, got {self.background!r}")
        if not 0.0 <= self.max_overlap < 1.0:
            raise ValueError(f"shapes max_overlap must lie in [0, 1), got {self.max_overlap}")

    def _check_types(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = (int, float) if isinstance(field.default, float) else type(field.default)
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ValueError(f"shapes {field.name} must be of type {type(field.default).__name__}, "
                                 f"got {value!r}")


@dataclass
class _Object:
    """One placed object, in pixel units, with its rendering."""

    shape: int
    color: int
    size: int
    extent: float  # side of the bounding square in pixels
    center: tuple[float, float]  # (x, y) in pixels, 0 = left/top edge of the image
    coverage: np.ndarray  # float32 [S, S] fraction of each pixel covered
    window: tuple[slice, slice]  # rows, columns of the bounding window; coverage is 0 outside
    full_mask: np.ndarray  # bool [S, S] coverage >= MASK_THRESHOLD, before occlusion


class ShapesDataset(Dataset):
    """Procedural images of coloured shapes with full annotations; see the module docstring.

    Build with a :class:`ShapesConfig`, keyword overrides, or both
    (``ShapesDataset(config, seed=3)``).

    Each item is a dict of fixed-size tensors (``K = max_objects``, ``S = image_size``):
    ``image`` float32 [3, S, S] in [-1, 1]; ``masks`` bool [K, S, S] visible instance masks;
    ``valid`` bool [K]; ``shape``, ``color``, ``size`` int64 [K] (-1 padding); ``center``
    float32 [K, 2]; ``relations`` int64 [K, K] indices into RELATIONS (-1 on the diagonal and
    padding); ``num_objects``, ``label``, ``index`` int64 scalars.
    """

    classes = SHAPES

    def __init__(self, config: ShapesConfig | None = None, **overrides):
        config = config or ShapesConfig()
        unknown = sorted(set(overrides) - {field.name for field in dataclasses.fields(config)})
        if unknown:
            raise ValueError(
                f"unknown ShapesConfig option(s) {unknown}; accepted: {config_field_names()}")
        self.config = dataclasses.replace(config, **overrides)

    def __len__(self) -> int:
        return self.config.num_images

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = checked_index(index, len(self), "images in a ShapesDataset")
        image, objects = self._generate(index)
        return _to_item(image, objects, self.config, index)

    def _generate(self, index: int) -> tuple[np.ndarray, list[_Object]]:
        """The image (float32 [S, S, 3] in [0, 1]) and the placed objects of item ``index``."""
        rng = np.random.default_rng([self.config.seed, index])
        background = _draw_background(rng, self.config)
        objects = _draw_layout(rng, self.config)
        return _composite(background, objects), objects

    def __repr__(self) -> str:
        return f"ShapesDataset({self.config})"


def config_field_names() -> list[str]:
    """Names of the ShapesConfig options, for error messages and spec parsing."""
    return [field.name for field in dataclasses.fields(ShapesConfig)]


def describe(item: dict) -> list[str]:
    """One line per object of an item, e.g. ``"large red circle at (0.30,-0.20)"``."""
    valid = _as_numpy(item["valid"])
    if valid.ndim != 1:
        raise ValueError(f"describe expects one item, got a batch (valid has shape {valid.shape}); "
                         "index the batch first")
    shapes, colors, sizes = (_as_numpy(item[key]) for key in ("shape", "color", "size"))
    centers = _as_numpy(item["center"])
    lines = []
    for k in np.flatnonzero(valid):
        x, y = centers[k]
        lines.append(f"{SIZES[sizes[k]]} {COLORS[colors[k]]} {SHAPES[shapes[k]]} "
                     f"at ({x:.2f},{y:.2f})")
    return lines


def relation_between(center_i: tuple[float, float], center_j: tuple[float, float]) -> int:
    """Index into RELATIONS of object ``i`` relative to ``j``: dominant axis, y grows downwards."""
    dx = center_i[0] - center_j[0]
    dy = center_i[1] - center_j[1]
    if abs(dx) >= abs(dy):
        return RELATIONS.index("left of") if dx < 0 else RELATIONS.index("right of")
    return RELATIONS.index("above") if dy < 0 else RELATIONS.index("below")


# --- background ------------------------------------------------------------------------------


def _draw_background(rng: np.random.Generator, config: ShapesConfig) -> np.ndarray:
    size = config.image_size
    if config.background == "plain":
        return np.full((size, size, 3), _PLAIN_BACKGROUND, dtype=np.float32)
    tint = rng.uniform(*_BACKGROUND_LEVEL, size=3)
    coarse = rng.standard_normal((_NOISE_GRID, _NOISE_GRID, 3))
    upsample = _bilinear_upsampler(_NOISE_GRID, size)
    # Separable interpolation as two matrix products (einsum over three operands is ~10x slower).
    rows = (upsample @ coarse.reshape(_NOISE_GRID, -1)).reshape(size, _NOISE_GRID, 3)
    smooth = np.matmul(upsample, rows)  # [S, S, 3]: batched over image rows
    background = tint + _BACKGROUND_NOISE * smooth
    return np.clip(background, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _bilinear_upsampler(grid: int, size: int) -> np.ndarray:
    """Matrix [size, grid] that linearly interpolates a coarse grid over the image."""
    positions = np.linspace(0.0, grid - 1.0, size)
    return np.stack([np.interp(positions, np.arange(grid), np.eye(grid)[g])
                     for g in range(grid)], axis=1)


# --- layout ----------------------------------------------------------------------------------


def _draw_layout(rng: np.random.Generator, config: ShapesConfig) -> list[_Object]:
    """Objects with attributes drawn once and positions found by rejection sampling."""
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    # Attributes are fixed before placement so placement cannot bias their distribution.
    attributes = [(int(rng.integers(len(SHAPES))), int(rng.integers(len(COLORS))),
                   int(rng.integers(len(SIZES)))) for _ in range(count)]
    best: list[_Object] = []
    for _ in range(_LAYOUT_ATTEMPTS):
        objects = _place_objects(rng, config, attributes)
        if len(objects) == count:
            return objects
        best = max(best, objects, key=len)
    # Only crowded configurations get here; fewer objects beats failing the whole item.
    if len(best) >= config.min_objects:
        return best
    raise ShapesLayoutError(
        f"could not place {config.min_objects} objects with max_overlap={config.max_overlap} "
        f"in {config.image_size}px images; lower min_objects/max_objects or raise max_overlap")


def _place_objects(rng: np.random.Generator, config: ShapesConfig,
                   attributes: list[tuple[int, int, int]]) -> list[_Object]:
    """Place objects one by one; one that finds no valid position is dropped."""
    objects: list[_Object] = []
    hidden: list[np.ndarray] = []  # per placed object, its pixels covered by later objects
    for shape, color, size_class in attributes:
        for _ in range(_POSITION_ATTEMPTS):
            candidate = _random_object(rng, config.image_size, shape, color, size_class)
            new_hidden = _hidden_after_adding(objects, hidden, candidate, config)
            if new_hidden is not None:
                objects.append(candidate)
                hidden = new_hidden + [np.zeros_like(candidate.full_mask)]
                break
    return objects


def _random_object(rng: np.random.Generator, image_size: int, shape: int, color: int,
                   size_class: int) -> _Object:
    # The floor keeps small objects recognisable (and their masks non-empty) in tiny images.
    extent = max(rng.uniform(*SIZE_RANGES[size_class]) * image_size, _MIN_EXTENT_PIXELS)
    half = extent / 2
    # Half a pixel of margin keeps every object entirely inside the image.
    low, high = half + 0.5, image_size - half - 0.5
    center = (float(rng.uniform(low, high)), float(rng.uniform(low, high)))
    coverage, window = _render_coverage(shape, center, extent, image_size)
    return _Object(shape, color, size_class, extent, center, coverage, window,
                   coverage >= MASK_THRESHOLD)


def _hidden_after_adding(objects: list[_Object], hidden: list[np.ndarray], candidate: _Object,
                         config: ShapesConfig) -> list[np.ndarray] | None:
    """Updated hidden masks if ``candidate`` can go on top of ``objects``, else None."""
    size = config.image_size
    min_gap = _MIN_DOMINANT_GAP * size
    min_margin = _MIN_AXIS_MARGIN * size
    for other in objects:
        dx = abs(candidate.center[0] - other.center[0])
        dy = abs(candidate.center[1] - other.center[1])
        if max(dx, dy) < min_gap or abs(dx - dy) < min_margin:
            return None
    min_visible = max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_AREA * size * size)
    if candidate.full_mask.sum() < min_visible:
        return None
    updated = []
    for other, other_hidden in zip(objects, hidden):
        now_hidden = other_hidden | (other.full_mask & candidate.full_mask)
        area = other.full_mask.sum()
        hidden_area = now_hidden.sum()
        if hidden_area > config.max_overlap * area or area - hidden_area < min_visible:
            return None
        updated.append(now_hidden)
    return updated


# --- rendering -------------------------------------------------------------------------------


def _render_coverage(shape: int, center: tuple[float, float], extent: float,
                     image_size: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Fraction of each pixel covered by the shape, by supersampling its bounding window."""
    half = extent / 2
    cx, cy = center
    x0, x1 = max(0, int(np.floor(cx - half))), min(image_size, int(np.ceil(cx + half)))
    y0, y1 = max(0, int(np.floor(cy - half))), min(image_size, int(np.ceil(cy + half)))
    offsets = (np.arange(SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE
    xs = (np.arange(x0, x1, dtype=np.float32)[:, None] + offsets).ravel()
    ys = (np.arange(y0, y1, dtype=np.float32)[:, None] + offsets).ravel()
    # Coordinates normalised to the bounding square: [-1, 1] on both axes, v downwards.
    u = ((xs - cx) / half)[None, :]
    v = ((ys - cy) / half)[:, None]
    inside = _SHAPE_TESTS[SHAPES[shape]](u, v)
    window = inside.reshape(y1 - y0, SUPERSAMPLE, x1 - x0, SUPERSAMPLE).mean(axis=(1, 3))
    coverage = np.zeros((image_size, image_size), dtype=np.float32)
    coverage[y0:y1, x0:x1] = window
    return coverage, (slice(y0, y1), slice(x0, x1))


# Inside tests in the bounding square's coordinates. The square is shrunk so that its area is
# close to the circle's, which keeps "size" comparable across shapes.
_SQUARE_HALF_SIDE = 0.88
_CROSS_HALF_WIDTH = 0.34

_SHAPE_TESTS = {
    "circle": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: (np.abs(u) <= _SQUARE_HALF_SIDE) & (np.abs(v) <= _SQUARE_HALF_SIDE),
    # Apex at the top centre, base along the bottom edge.
    "triangle": lambda u, v: (v <= 1.0) & (np.abs(u) <= (v + 1.0) * 0.5),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
    "cross": lambda u, v: (((np.abs(u) <= _CROSS_HALF_WIDTH) & (np.abs(v) <= 1.0))
                           | ((np.abs(v) <= _CROSS_HALF_WIDTH) & (np.abs(u) <= 1.0))),
}


def _composite(background: np.ndarray, objects: list[_Object]) -> np.ndarray:
    """Paint objects in order over the background, blending anti-aliased edges by coverage."""
    image = background.copy()
    for obj in objects:
        color = np.asarray(COLOR_RGB[obj.color], dtype=np.float32) / 255.0
        region = image[obj.window]  # a view: blending only where the object can be
        alpha = obj.coverage[obj.window][:, :, None]
        region += alpha * (color - region)
    return image


# --- item ------------------------------------------------------------------------------------


def _visible_masks(objects: list[_Object]) -> list[np.ndarray]:
    """Each object's mask minus the pixels claimed by objects painted after it."""
    visible = []
    covered_later = np.zeros_like(objects[0].full_mask)
    for obj in reversed(objects):
        visible.append(obj.full_mask & ~covered_later)
        covered_later |= obj.full_mask
    return visible[::-1]


def _to_item(image: np.ndarray, objects: list[_Object], config: ShapesConfig,
             index: int) -> dict[str, torch.Tensor]:
    """Pack one generated image into fixed-size tensors, padding to ``max_objects`` slots."""
    size, slots = config.image_size, config.max_objects
    count = len(objects)
    masks = np.zeros((slots, size, size), dtype=bool)
    masks[:count] = _visible_masks(objects)
    center = np.zeros((slots, 2), dtype=np.float32)
    center[:count] = [(2.0 * obj.center[0] / size - 1.0, 2.0 * obj.center[1] / size - 1.0)
                      for obj in objects]
    shape = _padded([obj.shape for obj in objects], slots)
    largest = int(np.argmax(masks[:count].sum(axis=(1, 2))))
    pixels = np.ascontiguousarray(image.transpose(2, 0, 1)) * 2.0 - 1.0
    return {
        "image": torch.from_numpy(pixels),
        "masks": torch.from_numpy(masks),
        "valid": torch.from_numpy(np.arange(slots) < count),
        "shape": torch.from_numpy(shape),
        "color": torch.from_numpy(_padded([obj.color for obj in objects], slots)),
        "size": torch.from_numpy(_padded([obj.size for obj in objects], slots)),
        "center": torch.from_numpy(center),
        "relations": torch.from_numpy(_relation_matrix(objects, slots)),
        "num_objects": torch.tensor(count, dtype=torch.int64),
        "label": torch.tensor(shape[largest], dtype=torch.int64),
        "index": torch.tensor(index, dtype=torch.int64),
    }


def _padded(values: list[int], slots: int) -> np.ndarray:
    padded = np.full(slots, PAD, dtype=np.int64)
    padded[:len(values)] = values
    return padded


def _relation_matrix(objects: list[_Object], slots: int) -> np.ndarray:
    relations = np.full((slots, slots), PAD, dtype=np.int64)
    for i, first in enumerate(objects):
        for j, second in enumerate(objects):
            if i != j:
                relations[i, j] = relation_between(first.center, second.center)
    return relations


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
