"""Image files in and out: every image the project reads goes through :func:`load_image`.

Pixels travel as float32 tensors ``[3, H, W]`` in ``[-1, 1]`` (the model's range). Loading turns any
PIL mode into RGB, takes the largest centred square and resizes it with bicubic filtering, so the
CLI, the demo and the folder dataset all see exactly the same preprocessing.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..io import atomic_write
from ..user_settings import env_number

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Composite transparent pixels over white: that is how viewers and browsers show them.
_ALPHA_BACKGROUND = (255, 255, 255)

# Let PIL shrink by integer factors first (much faster on large photos); a gap of 3 keeps the final
# bicubic step visually indistinguishable from a direct resize.
_REDUCING_GAP = 3.0

# JPEGs are decoded at no less than twice the output size, for the same reason.
_DRAFT_FACTOR = 2

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


MAX_PIXELS_ENV = "COMIT_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageLoadError(ValueError):
    """A file could not be read as an image (missing, not an image, truncated or corrupt)."""


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Read an image file as a float32 ``[3, size, size]`` tensor in ``[-1, 1]``.

    Any mode becomes RGB (alpha composited over white, 16-bit scaled to 8-bit), the largest centred
    square is kept and resized to ``size`` with bicubic filtering.

    Raises:
        ImageLoadError: the file is missing, is not an image, or is truncated/corrupt.
        ValueError: ``size`` is not a positive integer.
    """
    _check_size(size)
    image = open_rgb(path, draft_size=size * _DRAFT_FACTOR)
    return pil_to_tensor(center_square_resize(image, size))


def load_images(paths: Sequence[str | os.PathLike], size: int) -> torch.Tensor:
    """Read several image files as one float32 batch ``[B, 3, size, size]`` in ``[-1, 1]``; warns
    (:class:`ImageFitWarning`) about each image the model will see badly."""
    if len(paths) == 0:
        raise ValueError("load_images got an empty list of paths; pass at least one image file")
    pixels = torch.stack([load_image(path, size) for path in paths])
    for path in paths:
        with open_image(Path(path)) as image:
            for message in fit_problems(image.size, size):
                warnings.warn(f"{path}: {message}", ImageFitWarning, stacklevel=2)
    return pixels


class ImageFitWarning(UserWarning):
    """An image the model will see badly: most of it cropped away, or far from the model's input size."""


# The centre square keeps less than this share of the image: a panorama loses its sides.
KEPT_AREA_WARNING = 0.5
# Resizing by more than this factor (either way) leaves a blurry input or throws most detail away.
SCALE_WARNING = 8.0


def fit_problems(image_size: tuple[int, int], size: int) -> list[str]:
    """What preprocessing a ``width x height`` image into the model's ``size`` x ``size`` input loses."""
    width, height = image_size
    side = min(width, height)
    problems = []
    kept = side * side / (width * height)
    if kept < KEPT_AREA_WARNING:
        problems.append(f"the centre crop keeps {kept:.0%} of this {width}x{height} image; crop it to what "
                        "matters first")
    if side * SCALE_WARNING < size:
        problems.append(f"{width}x{height} is upscaled {size / side:.0f}x to the model's {size}-px input: "
                        "it will look blurry to the model")
    elif side > size * SCALE_WARNING:
        problems.append(f"{width}x{height} is shrunk {side / size:.0f}x to the model's {size}-px input: fine "
                        "detail is lost; a model trained on larger images suits it better")
    return problems


def decode_image_bytes(data: bytes, size: int, name: str) -> torch.Tensor:
    """An encoded image held in memory (a tar member, a dataset cell), preprocessed exactly like
    :func:`load_image`; ``name`` says where it came from in errors."""
    _check_size(size)
    image = open_rgb(io.BytesIO(data), draft_size=size * _DRAFT_FACTOR, name=name)
    return pil_to_tensor(center_square_resize(image, size))


def open_rgb(path: str | os.PathLike | BinaryIO, draft_size: int | None = None, name: str | None = None) -> Image.Image:
    """Open, fully decode and convert an image file to an 8-bit RGB PIL image.

    The full decode (``img.load()``) is what exposes truncated files; PIL's ``open`` only reads the
    header. With ``draft_size``, JPEGs may be decoded at a reduced scale (1/2, 1/4, 1/8) that still
    keeps both sides at least ``draft_size`` — several times faster for camera photos.
    """
    if name is None:
        path = name = Path(path)
    with open_image(path, name=name) as image:
        if draft_size is not None:
            image.draft(image.mode, (draft_size, draft_size))  # no-op for non-JPEG files
        try:
            image.load()
        except (OSError, SyntaxError, EOFError, ValueError) as error:
            # PIL reports truncation and broken streams through these during the decode.
            raise ImageLoadError(
                f"cannot read image {name}: truncated or corrupt ({_one_line(error)})") from None
        return to_rgb(_apply_exif_orientation(image))


def max_image_pixels() -> int:
    """The largest image (width x height) comit decodes: Pillow's warning limit (about 89 megapixels),
    or ``COMIT_MAX_IMAGE_PIXELS`` for users who really mean to open larger files."""
    return int(env_number(MAX_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS, int, "a whole number of pixels"))


def open_image(path: str | os.PathLike | BinaryIO, name: str | os.PathLike | None = None) -> Image.Image:
    """Image.open (header only) with clear one-line errors and the size limit of :func:`max_image_pixels`;
    ``path`` may be an open binary file, named ``name`` in errors."""
    if name is None:
        path = name = Path(path)
    image = _open_unchecked(path, name)
    limit = max_image_pixels()
    if image.width * image.height > limit:
        image.close()
        raise ImageLoadError(f"cannot read image {name}: {image.width} x {image.height} = "
                             f"{image.width * image.height:,} pixels is more than the limit of {limit:,} "
                             f"(a decompression bomb?); set {MAX_PIXELS_ENV} to open it anyway")
    return image


def _open_unchecked(path: Path | BinaryIO, name: str | os.PathLike) -> Image.Image:
    """Image.open with Pillow's own bomb check off (it warns, in two lines, then errors at twice the
    size): the size check above replaces it with one limit and one line."""
    saved = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None
            return Image.open(path)
    except FileNotFoundError:
        raise ImageLoadError(f"cannot read image {name}: no such file") from None
    except IsADirectoryError:
        raise ImageLoadError(f"cannot read image {name}: it is a folder, not a file") from None
    except PermissionError:
        raise ImageLoadError(f"cannot read image {name}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"cannot read image {name}: not a recognised image format") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(f"cannot read image {name}: {_one_line(error)}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate camera photos upright; a malformed EXIF block is ignored rather than fatal."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - EXIF parsing can fail in many ways; the pixels are fine
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB, compositing transparency over white."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        image = _high_depth_to_l(image)
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def center_square_resize(image: Image.Image, size: int) -> Image.Image:
    """Keep the largest centred square of ``image`` and resize it to ``size`` x ``size`` (bicubic).

    Equivalent to "resize the shorter side to ``size``, then centre-crop", done in one resampling.
    """
    width, height = image.size
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    box = (left, top, left + side, top + side)
    if side == size:
        return image.crop(box)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box,
                        reducing_gap=_REDUCING_GAP)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 ``[3, H, W]`` tensor in ``[-1, 1]``."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float()
    return tensor.div_(127.5).sub_(1.0)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """Float ``[3, H, W]`` tensor in ``[-1, 1]`` -> RGB PIL image (values outside are clipped)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"to_pil expects a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(
            f"to_pil expects one image shaped [3, H, W], got {list(tensor.shape)}; "
            "index a batch first (tensor[i])")
    pixels = tensor.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
    pixels = ((pixels + 1.0) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy())


def save_image(image: torch.Tensor | Image.Image, path: str | os.PathLike) -> Path:
    """Write an image atomically; the format follows the file suffix (``.png``, ``.jpg``, ...).

    Written through :func:`comit.io.atomic_write`: a reader never sees a half-written file.
    Parent folders are created.
    Returns the written path.
    """
    path = Path(path)
    image_format = _format_for_suffix(path)
    pil = to_pil(image) if isinstance(image, torch.Tensor) else image
    if image_format == "JPEG" and pil.mode not in ("RGB", "L"):
        pil = to_rgb(pil)  # JPEG has no alpha channel
    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            pil.save(handle, format=image_format)

    atomic_write(path, write)
    return path


def _format_for_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    image_format = Image.registered_extensions().get(suffix)
    if image_format is None:
        raise ValueError(
            f"cannot save image to {path}: unknown suffix {suffix or '(none)'!r}; "
            f"use one of {', '.join(IMAGE_EXTENSIONS)}")
    return image_format


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float greyscale -> 8-bit ``L``, keeping the full tonal range."""
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
    elif image.mode in _SIXTEEN_BIT_MODES or (values.size and values.max() > 255):
        scale = 255.0 / 65535.0  # PIL also reports 16-bit PNGs as mode "I"
    else:
        scale = 1.0
    pixels = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)  # uint8 2-D arrays become mode "L"


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"image size must be a positive integer, got {size!r}")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
