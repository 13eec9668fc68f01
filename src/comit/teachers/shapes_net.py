"""The bundled teacher's network: a small CNN that knows which shape and colour is where.

It plays DINOv2's part for the built-in shapes data, where no pretrained encoder exists. Trained
by ``scripts/train_shapes_teacher.py`` with two supervised heads:

* dense: for every cell of the 8x8 feature map (64-px images), the fraction of the cell covered
  by background / each shape class, each colour, each size class;
* global: the multi-label set of (shape, colour) pairs present, from the mean-pooled map.

The features the heads read are what the teacher hands to REPA (cells) and SREPA (pooled).
Checkpoints are a directory with ``config.json`` and ``model.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..io import atomic_write, atomic_write_json, read_format_json
from .base import TeacherError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "comit-shapes-teacher"
FORMAT_VERSION = 1
DOWNSAMPLE = 8  # three stride-2 stages: 64 px -> 8x8 cells


@dataclass(frozen=True)
class ShapesNetConfig:
    """Architecture of :class:`ShapesNet`.

    image_size: the side it was trained at; other sizes are resized to it by the teacher.
    stem_width, mid_width: channels at 1/2 and 1/4 resolution; feature_dim at 1/8.
    context_blocks: residual blocks at 1/8 resolution, with growing dilation, so every cell
        sees the whole object it lies on (and its neighbours).
    num_shapes, num_colors, num_sizes: classes of the shapes data the heads predict.
    """

    image_size: int = 64
    stem_width: int = 16
    mid_width: int = 32
    feature_dim: int = 64
    context_blocks: int = 2
    num_shapes: int = 5
    num_colors: int = 6
    num_sizes: int = 2

    def __post_init__(self) -> None:
        if self.image_size % DOWNSAMPLE:
            raise ValueError(f"shapes teacher image_size must be a multiple of {DOWNSAMPLE}, "
                             f"got {self.image_size}")

    @property
    def grid(self) -> int:
        return self.image_size // DOWNSAMPLE

    @property
    def num_pairs(self) -> int:
        return self.num_shapes * self.num_colors


def conv_block(inputs: int, outputs: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv -> GroupNorm -> GELU. GroupNorm, not BatchNorm: no train/eval difference to get wrong."""
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel, stride=stride, padding=(kernel - stride + 1) // 2),
        nn.GroupNorm(8, outputs),
        nn.GELU(),
    )


class ContextBlock(nn.Module):
    """Residual ConvNeXt-style block: dilated depthwise 3x3 for reach, pointwise MLP for mixing.

    Depthwise keeps the weights small (the whole teacher is a few hundred KB).
    """

    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.spatial = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation,
                                 groups=width)
        self.norm = nn.GroupNorm(1, width)
        self.mix = nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.GELU(),
                                 nn.Conv2d(2 * width, width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mix(self.norm(self.spatial(x)))


class ShapesNet(nn.Module):
    """Images [B, 3, S, S] in [-1, 1] (S = config.image_size) -> feature map [B, D, S/8, S/8]."""

    def __init__(self, config: ShapesNetConfig = ShapesNetConfig()):
        super().__init__()
        self.config = config
        c = config
        self.backbone = nn.Sequential(
            conv_block(3, c.stem_width, stride=2, kernel=4),  # 1/2
            conv_block(c.stem_width, c.stem_width),
            conv_block(c.stem_width, c.mid_width, stride=2, kernel=4),  # 1/4
            conv_block(c.mid_width, c.mid_width),
            conv_block(c.mid_width, c.feature_dim, stride=2, kernel=4),  # 1/8
            *(ContextBlock(c.feature_dim, dilation=2 ** i) for i in range(c.context_blocks)),
        )
        # Dense head: one 1x1 conv per attribute; channel 0 of each is "background".
        self.cell_heads = nn.ModuleDict({
            "shape": nn.Conv2d(c.feature_dim, 1 + c.num_shapes, 1),
            "color": nn.Conv2d(c.feature_dim, 1 + c.num_colors, 1),
            "size": nn.Conv2d(c.feature_dim, 1 + c.num_sizes, 1),
        })
        self.pair_head = nn.Linear(c.feature_dim, c.num_pairs)

    def feature_map(self, images: Tensor) -> Tensor:
        """[B, D, g, g] features, layer-normalised per cell (DINOv2's outputs are too)."""
        features = self.backbone(images)
        return F.layer_norm(features.transpose(1, -1), (features.shape[1],)).transpose(1, -1)

    def heads(self, features: Tensor) -> dict[str, Tensor]:
        """Logits: per-cell ``shape``/``color``/``size`` [B, 1+C, g, g], global ``pairs`` [B, P]."""
        logits = {name: head(features) for name, head in self.cell_heads.items()}
        logits["pairs"] = self.pair_head(features.mean(dim=(2, 3)))
        return logits

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.heads(self.feature_map(images))

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path, metadata: dict | None = None) -> None:
        """Write ``config.json`` (config + free-form ``metadata``) and ``model.safetensors``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format": FORMAT, "format_version": FORMAT_VERSION,
                  "config": dataclasses.asdict(self.config), "metadata": metadata or {}}
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_NAME, lambda path: save_file(state, str(path)))
        atomic_write_json(directory / CONFIG_NAME, config)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ShapesNet:
        """Load a directory written by :meth:`save_pretrained`."""
        directory = Path(directory)
        config = read_shapes_config(directory)
        net = cls(config)
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except (FileNotFoundError, SafetensorError, OSError) as error:
            raise TeacherError(f"cannot read {directory / WEIGHTS_NAME}: {error}") from error
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise TeacherError(f"{directory / WEIGHTS_NAME} does not match its config: "
                               f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
        return net


def is_shapes_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` holds a shapes-teacher checkpoint (judged by its config format)."""
    try:
        raw = json.loads((Path(directory) / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("format") == FORMAT


def read_shapes_config(directory: Path) -> ShapesNetConfig:
    raw = read_format_json(directory, CONFIG_NAME, FORMAT, FORMAT_VERSION, TeacherError, "a shapes-teacher")
    try:
        return ShapesNetConfig(**raw.get("config", {}))
    except (TypeError, ValueError) as error:
        raise TeacherError(f"bad shapes-teacher config in {directory / CONFIG_NAME}: {error}") from error
