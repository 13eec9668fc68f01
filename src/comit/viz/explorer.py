"""What the web app computes, without the web: check an upload, trace it, draw the figures.

``comit serve`` (app.py) only lays these results out with Gradio; keeping them here lets the tests
drive every behaviour (limits, bad files, clicks on the token grid) without a server or a browser.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..data.images import ImageLoadError, load_image
from ..data.samples import sample_paths
from ..model.policies import ADAPTIVE, RANDOM, RASTER_SCAN
from . import figures
from .trace import Trace, VizSettings, top_tokens, trace_images

ORDERS = (ADAPTIVE, RASTER_SCAN, RANDOM)  # the app's choices, its default first
MB = 2**20  # what Gradio's own size message calls a MB, so both messages agree


class UserError(ValueError):
    """Something the person using the app can fix; the app shows the message as is."""


@dataclass
class Result:
    """The pictures of one run, and the trace behind them (kept for later token clicks)."""

    trace: Trace
    crop_path: Image.Image
    reconstruction: Image.Image
    one_step: Image.Image
    token_ids: Image.Image
    token: int
    attention: Image.Image
    note: str


class Explorer:
    """Models by name (loaded on first use, then kept) and the rules for uploads."""

    def __init__(self, models: list[str], max_upload_bytes: int, loader: Callable[[str], object] | None = None):
        """``loader(name)`` returns a model (default: ``COMiT.from_pretrained(name)`` on the CPU)."""
        if not models:
            raise ValueError("the app needs at least one model")
        if max_upload_bytes <= 0:
            raise ValueError(f"the upload limit must be > 0 bytes, got {max_upload_bytes}")
        self.model_names = list(dict.fromkeys(models))
        self.max_upload_bytes = max_upload_bytes
        self._loader = loader or default_loader
        self._models: dict[str, object] = {}

    # ------------------------------------------------------------------ models and inputs
    def model(self, name: str):
        if name not in self.model_names:
            raise UserError(f"unknown model {name!r}: choose one of {', '.join(self.model_names)}")
        if name not in self._models:
            self._models[name] = self._loader(name)
        return self._models[name]

    @staticmethod
    def samples() -> dict[str, Path]:
        return {path.stem: path for path in sample_paths()}

    def image_path(self, upload: str | None, sample: str | None) -> Path:
        """The uploaded file if there is one, else the chosen sample."""
        if upload:
            path = Path(upload)
            self.check_upload(path)
            return path
        samples = self.samples()
        if sample in samples:
            return samples[sample]
        raise UserError("upload an image or pick one of the samples")

    def check_upload(self, path: Path) -> None:
        size = os.path.getsize(path)
        if size > self.max_upload_bytes:
            raise UserError(f"{path.name} is {size / MB:.3g} MB; the limit is {self.max_upload_bytes / MB:.3g} MB. "
                            "Upload a smaller image")

    # ------------------------------------------------------------------ runs
    def run(self, upload: str | None, sample: str | None, model_name: str, order: str, num_crops: int,
            global_crop: bool, steps: int, cfg: float, seed: int) -> Result:
        net = self.model(model_name)
        path = self.image_path(upload, sample)
        if order not in ORDERS:
            raise UserError(f"unknown crop order {order!r}: choose one of {', '.join(ORDERS)}")
        try:
            image = load_image(path, net.config.image_size)
        except ImageLoadError as error:  # name the file as the person knows it, not by the server's copy
            reason = str(error).replace(str(path), path.name)
            raise UserError(f"{reason}. Upload a PNG, JPEG, WebP, GIF, BMP or TIFF image") from None
        available = net.crops.num_indices(bool(global_crop))
        crops = max(1, min(int(num_crops), available))
        note = "" if crops == int(num_crops) else f"this model has {available} crops; observed all {available}. "
        settings = VizSettings(order=order, num_crops=crops, global_crop=bool(global_crop), steps=int(steps),
                               cfg=float(cfg), seed=int(seed))
        try:
            trace = trace_images(net, image[None].to(net.device), settings)[0]
        except ValueError as error:  # settings out of range (steps, guidance)
            raise UserError(str(error)) from None
        token = top_tokens(trace.attention, 1)[0]
        size = trace.image.shape[-1]
        note += (f"{len(trace.boxes)} crops ({', '.join(f'#{i}' for i in trace.crop_indices)}); reconstruction "
                 f"{figures.format_psnr(trace.reconstruction_psnr())}. Click a token to see where it looks.")
        return Result(trace=trace, crop_path=figures.crop_path(trace),
                      reconstruction=figures.upscale(trace.reconstruction, figures.display_scale(size)),
                      one_step=figures.one_step_strip(trace), token_ids=figures.token_grid(trace, [token]),
                      token=token, attention=self.attention(trace, token), note=note)

    # ------------------------------------------------------------------ tokens
    @staticmethod
    def token_at(trace: Trace, x: float, y: float) -> int | None:
        """The message position under a click on the token-id grid (None between cells)."""
        return figures.TokenGridLayout.for_tokens(trace.num_tokens).position_at(x, y)

    @staticmethod
    def check_token(trace: Trace | None, token) -> int:
        if trace is None:
            raise UserError("run a reconstruction first")
        if token is None or not 0 <= int(token) < trace.num_tokens:
            raise UserError(f"token position must lie in [0, {trace.num_tokens - 1}], got {token}")
        return int(token)

    def attention(self, trace: Trace, token: int) -> Image.Image:
        position = self.check_token(trace, token)
        return figures.attention_overlay(trace.image, trace.attention[position])

    def token_ids(self, trace: Trace, token: int) -> Image.Image:
        return figures.token_grid(trace, [self.check_token(trace, token)])


def default_loader(name: str):
    from ..model.comit import COMiT

    torch.set_flush_denormal(True)
    return COMiT.from_pretrained(name)
