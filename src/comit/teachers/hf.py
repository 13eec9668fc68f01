"""Any `transformers` vision backbone as a teacher; DINOv2 (the paper's choice) by default.

``transformers`` is an optional dependency (``pip install comit[teachers]``); it is imported only
when an HFTeacher is built.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Teacher, TeacherError, TeacherFeatures, grid_side

DEFAULT_HF_TEACHER = "facebook/dinov2-base"
# ImageNet statistics, used by DINOv2 and most backbones whose processor config we cannot read.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class HFTeacher(Teacher):
    """A frozen `transformers` backbone: patch tokens and the CLS token of its last layer.

    Images in [-1, 1] are mapped to [0, 1], resized to ``image_size`` (bicubic, antialiased, as
    the processors do it for PIL images), normalised with the model's processor statistics
    (ImageNet mean/std when it has none) and run through the model. From ``last_hidden_state``
    the CLS token becomes the global feature and register tokens (DINOv2 with registers) are
    dropped. Models without a CLS token give ``pooler_output`` or, failing that, the patch mean.
    Convolutional backbones ([B, C, H, W] outputs) give their feature-map cells as patches.

    Args:
        name_or_path: hub id (read from the local cache when offline) or local directory.
        image_size: side the images are resized to; a multiple of the model's patch size.
        dtype: weights and compute dtype (e.g. ``torch.bfloat16`` on GPUs); outputs are float32.
    """

    def __init__(self, name_or_path: str | Path = DEFAULT_HF_TEACHER, image_size: int = 224,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.name = str(name_or_path)
        self.image_size = int(image_size)
        self.dtype = dtype
        model = load_backbone(self.name)
        # Multimodal models (CLIP, SigLIP) keep their image tower in `vision_model`.
        self.model = getattr(model, "vision_model", model).to(dtype)
        config = self.model.config
        patch_size = getattr(config, "patch_size", None)
        if isinstance(patch_size, int) and self.image_size % patch_size:
            raise TeacherError(f"teacher image_size {self.image_size} is not a multiple of the "
                               f"patch size {patch_size} of {self.name}")
        self.num_register_tokens = int(getattr(config, "num_register_tokens", 0) or 0)
        mean, std = read_normalisation(self.name)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.feature_dim = _feature_dim(config)
        self.freeze()

    def normalise(self, images: Tensor) -> Tensor:
        """[-1, 1] images -> the resized, normalised pixel values the model expects."""
        pixels = (images.float() + 1.0) / 2.0
        if pixels.shape[-1] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bicubic",
                                   align_corners=False, antialias=True)
            # Bicubic overshoots; real inputs are 8-bit images, which never leave [0, 1].
            pixels = pixels.clamp(0.0, 1.0)
        return (pixels - self.mean) / self.std

    def extract(self, images: Tensor) -> TeacherFeatures:
        pixel_values = self.normalise(images).to(self.dtype)
        output = self.model(pixel_values=pixel_values)
        hidden = output.last_hidden_state
        pooled = getattr(output, "pooler_output", None)
        if hidden.ndim == 4:
            features = _from_feature_map(hidden, pooled)
        else:
            features = self._from_tokens(hidden, pooled)
        return features.to(torch.float32)

    def _from_tokens(self, hidden: Tensor, pooled: Tensor | None) -> TeacherFeatures:
        """Split [B, T, D] tokens into (CLS, registers, patches); square patch count decides."""
        tokens = hidden.shape[1] - self.num_register_tokens
        if _is_square(tokens - 1):  # DINOv2/ViT layout: CLS, registers, patches
            return TeacherFeatures(hidden[:, 1 + self.num_register_tokens:], hidden[:, 0])
        if _is_square(tokens):  # no CLS token (e.g. SigLIP): registers, if any, come first
            patches = hidden[:, self.num_register_tokens:]
            has_pool = pooled is not None and pooled.shape == (hidden.shape[0], hidden.shape[2])
            return TeacherFeatures(patches, pooled if has_pool else patches.mean(dim=1))
        raise TeacherError(f"cannot find a square patch grid in the {hidden.shape[1]} tokens of "
                           f"{self.name} ({self.num_register_tokens} register tokens)")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, image_size={self.image_size}, feature_dim={self.feature_dim}"


def load_backbone(name_or_path: str) -> nn.Module:
    """``AutoModel.from_pretrained`` with one-line errors for the offline and bad-path cases."""
    try:
        from transformers import AutoModel
    except ImportError as error:
        raise TeacherError("HF teachers need transformers: pip install 'comit[teachers]', "
                           "or use teacher=bundled") from error
    is_local = Path(name_or_path).expanduser().is_dir()
    try:
        return AutoModel.from_pretrained(str(Path(name_or_path).expanduser()) if is_local
                                         else name_or_path)
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if is_local:
            raise TeacherError(f"could not load teacher from {name_or_path}: {reason}") from error
        raise TeacherError(f"teacher {name_or_path!r} is not in the local cache; download once "
                           "with network or pass a local path, or use teacher=bundled "
                           f"({reason})") from error


def read_normalisation(name_or_path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std from the model's image-processor config, else the ImageNet values.

    The config dict is read directly rather than through AutoImageProcessor, which may want
    optional packages (torchvision) for its fast variant.
    """
    from transformers.image_processing_base import ImageProcessingMixin

    try:
        config, _ = ImageProcessingMixin.get_image_processor_dict(name_or_path)
    except (OSError, ValueError):
        return IMAGENET_MEAN, IMAGENET_STD
    mean, std = config.get("image_mean"), config.get("image_std")
    if not (_is_rgb_stat(mean) and _is_rgb_stat(std)) or min(std) <= 0:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _feature_dim(config) -> int:
    for name in ("hidden_size", "hidden_sizes", "hidden_dim", "embed_dim"):
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple)) and value:
            return int(value[-1])
        if isinstance(value, int):
            return value
    raise TeacherError(f"cannot read the feature width of {type(config).__name__}; "
                       "it has no hidden_size")


def _from_feature_map(hidden: Tensor, pooled: Tensor | None) -> TeacherFeatures:
    """[B, C, H, W] maps (ConvNeXt, ResNet): cells are the patches, pooled output the global."""
    batch, channels, height, width = hidden.shape
    if height != width:
        raise TeacherError(f"teacher feature maps must be square, got {height}x{width}")
    patches = hidden.flatten(2).transpose(1, 2)
    pooled = pooled.reshape(batch, -1) if pooled is not None else None
    has_pool = pooled is not None and pooled.shape[1] == channels
    return TeacherFeatures(patches, pooled if has_pool else patches.mean(dim=1))


def _is_square(count: int) -> bool:
    if count < 1:
        return False
    try:
        grid_side(count)
    except TeacherError:
        return False
    return True


def _is_rgb_stat(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 3
