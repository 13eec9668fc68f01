"""Which network's features rFID is measured in, from a command-line word.

* ``inception`` — the standard FID (Inception-v3 pool features via torchmetrics/torch-fidelity);
  the only choice whose numbers compare with published rFID.
* ``none`` — skip rFID.
* ``shapes-teacher`` or ``shapes-teacher:DIR`` — the global feature of the shapes CNN (bundled,
  or a checkpoint directory): a Fréchet distance for the built-in data when Inception is not
  installed. Models trained with that teacher for REPA/SREPA are partly optimised towards its
  features, so compare them only with each other.
* ``hf:ID`` — the global (CLS) feature of any `transformers` backbone, e.g. ``hf:facebook/dinov2-small``.
* ``python:package.module:name`` — any ``nn.Module`` (or a function returning one, called without
  arguments) mapping images in [-1, 1] ``[B, 3, H, W]`` to features ``[B, D]``. This imports and
  runs code named on the command line or in an experiment file, so it is refused unless the
  environment opts in with ``COMIT_ALLOW_PYTHON_FEATURES=1`` (from Python, pass the module itself).
"""

from __future__ import annotations

import importlib
import os

import torch
from torch import nn

from .fid import FID, FIDUnavailable


ALLOW_PYTHON_ENV = "COMIT_ALLOW_PYTHON_FEATURES"


class GlobalFeature(nn.Module):
    """A teacher (``comit.teachers``) seen as a feature extractor: its global feature."""

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.teacher(images).global_.float()


def feature_extractor(spec: str) -> nn.Module | None:
    """The extractor named by ``spec`` (None for ``inception``, which FID builds itself)."""
    kind, _, rest = spec.partition(":")
    if spec == "inception":
        return None
    if kind == "shapes-teacher":
        from ..teachers.shapes_teacher import BUNDLED_TEACHER_DIR, ShapesTeacher

        return GlobalFeature(ShapesTeacher.from_pretrained(rest or BUNDLED_TEACHER_DIR))
    if kind == "hf" and rest:
        from ..teachers.hf import HFTeacher

        return GlobalFeature(HFTeacher(rest))
    if kind == "python" and ":" in rest:
        if os.environ.get(ALLOW_PYTHON_ENV) != "1":
            raise ValueError(f"--fid-features {spec!r} would import and run {rest}; set {ALLOW_PYTHON_ENV}=1 "
                             "to allow code named in options or experiment files")
        return _imported_module(rest)
    raise ValueError(f"unknown --fid-features {spec!r}: use inception, none, shapes-teacher[:DIR], hf:HUB_ID "
                     "or python:package.module:name")


def _imported_module(target: str) -> nn.Module:
    module_name, _, attribute = target.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import the feature extractor {target!r}: {error}") from None
    extractor = found if isinstance(found, nn.Module) else found()
    if not isinstance(extractor, nn.Module):
        raise ValueError(f"{target} must be an nn.Module or return one, got {type(extractor).__name__}")
    return extractor.eval()


def resolve_features(features: str | nn.Module | None) -> str | nn.Module | None:
    """Load a named custom extractor once (for callers that build many FIDs); "inception" and
    "none" stay names."""
    if isinstance(features, str) and features not in ("none", "inception"):
        return feature_extractor(features)
    return features


def build_fid(features: str | nn.Module | None, device: torch.device | str = "cpu") -> tuple[FID | None, str | None]:
    """``(metric, note)``: the FID to update, or None with a note saying why rFID is not measured."""
    if features is None or features == "none":
        return None, "rFID not measured (--fid-features none)"
    if isinstance(features, nn.Module):
        return FID(features.eval().to(device)), None
    extractor = feature_extractor(features)
    try:
        metric = FID(extractor.to(device) if extractor is not None else None)
    except FIDUnavailable as error:
        return None, f"rFID not measured: {error}"
    return metric.to(device), None


def describe_features(features: str | nn.Module | None) -> str:
    if isinstance(features, nn.Module):
        return f"custom {type(features).__name__}"
    return str(features or "none")
