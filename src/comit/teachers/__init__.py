"""Frozen teachers for REPA (patch features) and SREPA (a global feature).

:func:`build_teacher` turns the ``teacher`` section of a training config into a teacher:
the bundled shapes CNN (offline), any ``transformers`` vision model (DINOv2 by default), or none.
"""

from __future__ import annotations

from .base import Teacher, TeacherError, TeacherFeatures
from .resample import resample_patches

__all__ = ["Teacher", "TeacherError", "TeacherFeatures", "build_teacher", "resample_patches"]


def build_teacher(kind: str, name: str | None = None, image_size: int = 224, dtype: str = "float32") -> Teacher | None:
    """``shapes`` (bundled unless ``name`` is a directory), ``hf`` (hub id or directory), ``none``."""
    import torch

    if kind == "none":
        return None
    if kind == "shapes":
        from .shapes_teacher import BUNDLED_TEACHER_DIR, ShapesTeacher

        return ShapesTeacher.from_pretrained(name or BUNDLED_TEACHER_DIR)
    if kind == "hf":
        from .hf import DEFAULT_HF_TEACHER, HFTeacher

        return HFTeacher(name or DEFAULT_HF_TEACHER, image_size=image_size, dtype=getattr(torch, dtype))
    raise TeacherError(f"unknown teacher kind {kind!r}: use shapes, hf or none")
