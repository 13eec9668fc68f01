"""The bundled teacher: the shapes CNN behind the Teacher interface, shipped in the package."""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from .base import Teacher, TeacherError, TeacherFeatures
from .shapes_net import ShapesNet

BUNDLED_TEACHER_DIR = Path(__file__).resolve().parents[1] / "assets" / "teacher-shapes"


class ShapesTeacher(Teacher):
    """Frozen :class:`ShapesNet`: its 8x8 feature-map cells as patches, their mean as global.

    Images of another size are resized to the size it was trained at (64 px), because the
    network learnt shapes at that scale; the patch grid is therefore always ``config.grid``.
    """

    def __init__(self, net: ShapesNet):
        super().__init__()
        self.net = net
        self.image_size = net.config.image_size
        self.grid = net.config.grid
        self.feature_dim = net.config.feature_dim
        self.freeze()

    @classmethod
    def from_pretrained(cls, directory: str | Path = BUNDLED_TEACHER_DIR) -> ShapesTeacher:
        """Load a checkpoint directory (default: the one shipped in the package)."""
        directory = Path(directory).expanduser()
        if not directory.is_dir():
            hint = ("; reinstall comit or retrain it with scripts/train_shapes_teacher.py"
                    if directory == BUNDLED_TEACHER_DIR else "")
            raise TeacherError(f"no shapes-teacher directory at {directory}{hint}")
        return cls(ShapesNet.from_pretrained(directory))

    def extract(self, images: Tensor) -> TeacherFeatures:
        images = images.float()
        if images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size),
                                   mode="bilinear", align_corners=False,
                                   antialias=images.shape[-1] > self.image_size)
        cells = self.net.feature_map(images)
        return TeacherFeatures(cells.flatten(2).transpose(1, 2), cells.mean(dim=(2, 3)))

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, grid={self.grid}, feature_dim={self.feature_dim}"
