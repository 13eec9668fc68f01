"""The protocol every evaluation follows: settings, datasets, batches, and tokenizing under a crop policy.

Randomness is drawn per image from ``(seed, image index, stream)``: the adaptive policy's noise,
random crop orders, decoding noise and attention noise of image ``i`` are the same whatever the
batch size, the number of images evaluated, or which command asks. So ``eval recon`` at 3 crops
and the 3-crop point of ``eval crops`` score the very same reconstructions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from ..data import build_dataset
from ..progress import progress as progress_bar
from ..data.mask_folder import MaskFolderDataset
from ..data.splits import split_folder
from ..model.comit import COMiT, Tokens
from ..model.solvers import check_decoding
from ..model.policies import ADAPTIVE, CropPolicy, FixedOrder, PerImageRandomOrder, RandomOrder, \
    parse_policy

# Streams of per-image randomness (any distinct integers; fixed so results stay reproducible).
TOKENIZE_NOISE, DECODE_NOISE, ATTENTION_NOISE, RANDOM_ORDER = 1, 2, 3, 4


@dataclass
class EvalSettings:
    """The crop policy (as in ``tokenize``), the decoding settings and how to run.

    ``order`` is a policy name, a list of crop indices or a policy (``comit.model.policies``);
    ``num_crops=None`` observes every crop of the order.
    """

    order: str | list[int] | CropPolicy = ADAPTIVE
    num_crops: int | None = 3
    global_crop: bool = False
    steps: int = 10
    cfg: float = 7.5
    solver: str = "euler"
    seed: int = 0
    batch_size: int = 16
    progress: bool = True

    def describe(self) -> dict:
        """JSON-ready settings (without the progress flag)."""
        described = asdict(self)
        described.pop("progress")
        return described

    def check(self, model: COMiT) -> None:
        check_decoding(self.steps, self.cfg)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        parse_policy(self.order).check(model.crops, self.num_crops, self.global_crop)


# ---------------------------------------------------------------------- data
def load_dataset(data: str, image_size: int, split: str = "val", num_images: int | None = None,
                 masks: str | Path | None = None) -> Dataset:
    """``data`` as ``comit.data.build_dataset`` reads it (``shapes``, ``shapes:k=v``, a folder),
    or images paired with a mask folder; the first ``num_images`` items when given."""
    if masks is not None:
        dataset: Dataset = MaskFolderDataset(split_folder(Path(data), split), masks, image_size)
    else:
        dataset = build_dataset(data, image_size, split=split)
    return first_items(dataset, num_images)


def first_items(dataset: Dataset, count: int | None) -> Dataset:
    """The first ``count`` items (all when None); a clear error for an impossible count."""
    if count is None:
        return dataset
    if count < 1:
        raise ValueError(f"--num-images must be >= 1, got {count}")
    return Subset(dataset, range(min(count, len(dataset))))


def collate(items: list[dict]) -> dict:
    """Stack items; variable object counts (mask folders) are padded with empty, invalid slots."""
    if "masks" in items[0]:
        slots = max(item["masks"].shape[0] for item in items)
        items = [_pad_objects(item, slots) for item in items]
    return default_collate(items)


def _pad_objects(item: dict, slots: int) -> dict:
    missing = slots - item["masks"].shape[0]
    if missing == 0:
        return item
    masks = item["masks"]
    padded = dict(item)
    padded["masks"] = torch.cat([masks, masks.new_zeros(missing, *masks.shape[1:])])
    padded["valid"] = torch.cat([item["valid"], item["valid"].new_zeros(missing)])
    return padded


def batches(dataset: Dataset, batch_size: int, desc: str, progress: bool = True) -> Iterator[dict]:
    """Collated batches with an ``index`` tensor (the item's position in ``dataset``)."""
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=False, collate_fn=collate)
    yield from progress_bar(loader, desc=desc, unit="batch", enabled=progress, leave=False)


class _Indexed(Dataset):
    """Adds ``position`` (0..N-1) to every item: per-image seeds follow it."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "position": index}


# ---------------------------------------------------------------------- per-image randomness
def image_seed(seed: int, position: int, stream: int) -> int:
    # A large odd multiplier spreads (seed, position, stream) over distinct generator seeds.
    return (seed * 1_000_003 + position) * 16 + stream


def image_generator(seed: int, position: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(image_seed(seed, position, stream))


def per_image_noise(model: COMiT, positions: torch.Tensor, seed: int, stream: int) -> torch.Tensor:
    """One latent-shaped Gaussian per image, fixed by its position: ``[B, C, h, w]``."""
    shape = model.latent_shape(1)[1:]
    noise = [torch.randn(shape, generator=image_generator(seed, int(p), stream)) for p in positions]
    return torch.stack(noise).to(model.device)


def eval_policy(order: str | Sequence | CropPolicy, positions: torch.Tensor, seed: int) -> CropPolicy:
    """The crop policy of ``order`` with per-image randomness: a random order is drawn from each
    image's own seed, so it does not depend on the image's batch."""
    policy = parse_policy(order)
    if isinstance(policy, RandomOrder):
        return PerImageRandomOrder(tuple(image_seed(seed, int(p), RANDOM_ORDER) for p in positions))
    return policy


def crop_plan(model: COMiT, order: str | Sequence | CropPolicy, global_crop: bool, positions: torch.Tensor,
              seed: int) -> list[list[int]] | None:
    """Every crop of a fixed order, one list per image (None for orders chosen while tokenizing)."""
    policy = eval_policy(order, positions, seed)
    if not isinstance(policy, FixedOrder):
        return None
    return policy.order(model.crops, len(positions), global_crop, None).T.tolist()


def tokenize_batch(model: COMiT, images: torch.Tensor, positions: torch.Tensor,
                   settings: EvalSettings) -> Tokens:
    """Tokens of a batch under the settings' crop policy, with per-image randomness."""
    policy = eval_policy(settings.order, positions, settings.seed)
    return model.tokenize(images.to(model.device), global_crop=settings.global_crop, order=policy,
                          num_crops=settings.num_crops, **_tokenize_randomness(model, policy, positions, settings.seed))


def crop_steps(model: COMiT, images: torch.Tensor, positions: torch.Tensor, order: str | Sequence | CropPolicy,
               global_crop: bool, seed: int, max_crops: int | None = None) -> Iterator[Tokens]:
    """Tokens after 1, 2, ... crops of one order (``COMiT.tokenize_steps``: never re-encoding).

    Step k equals ``tokenize_batch`` with ``num_crops=k`` and the same order and seed.
    """
    policy = eval_policy(order, positions, seed)
    yield from model.tokenize_steps(images.to(model.device), global_crop=global_crop, order=policy,
                                    num_crops=max_crops, **_tokenize_randomness(model, policy, positions, seed))


def _tokenize_randomness(model: COMiT, policy: CropPolicy, positions: torch.Tensor, seed: int) -> dict:
    """Per-image noise for policies that read one-step errors; a generator for the rest (VAE samples)."""
    noise = per_image_noise(model, positions, seed, TOKENIZE_NOISE) if policy.reads_errors else None
    return {"noise": noise, "generator": image_generator(seed, int(positions[0]), TOKENIZE_NOISE)}


def decode_batch(model: COMiT, tokens: Tokens, positions: torch.Tensor, settings: EvalSettings) -> torch.Tensor:
    """Reconstructions ``[B, 3, S, S]`` in [-1, 1] with per-image decoding noise."""
    noise = per_image_noise(model, positions, settings.seed, DECODE_NOISE)
    return model.detokenize(tokens.messages, tokens.offsets, num_steps=settings.steps, solver=settings.solver,
                            cfg_weight=settings.cfg, noise=noise).float()


def parse_numbers(text: str | Sequence, kind: type = float, name: str = "list") -> list:
    """``"10,20,30"`` (or a sequence) -> ``[10.0, 20.0, 30.0]``; a clear error otherwise."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [kind(str(part).strip()) for part in parts if str(part).strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated {kind.__name__}s, got {text!r}") from None
    if not values:
        raise ValueError(f"{name} is empty; give at least one value")
    return values
