"""Tokenize a whole dataset into a folder of shards, and read the shards back as a dataset.

``OUT/index.json`` says what the folder holds (model, tokenize settings, dataset, number of
images, shard size) and ``OUT/shard-00000.safetensors``, ... are tokens files (``tokens_file.py``:
``ids``, ``messages``, ``offsets``, ``crop_order``, ``num_crops`` and the sources in the metadata),
``shard_size`` images each. Every file is written atomically, so a shard that exists is complete:
running the same command into the same folder again does only the missing shards, and a folder of
another run is refused rather than mixed. Under ``torchrun`` process ``r`` of ``W`` does shards
``r, r + W, ...`` (no process group is needed: the plan is the same on every process). Each shard
draws its random choices from its own seed, so a shard is the same whoever writes it and whenever.

What a run leaves (docs/datasets.md): a run that fails before its first shard is finished leaves
nothing (the index it wrote and its temporary files are removed); finished shards stay, and the
next run checks each of them (its images, settings and row count) and redoes one that does not
match. When only the inputs changed since an unfinished folder was started (a broken file removed),
the same command adopts the folder: shards whose images did not change are kept, the rest redone.
A finished folder, or one made with another model or other settings, is never touched.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .io import atomic_write_json
from .data.images import load_image
from .model.acceleration import autocast
from .model.comit import COMiT, Tokens
from .progress import progress
from .tokens_file import TokensFile, load_tokens, save_tokens

INDEX_NAME = "index.json"
FORMAT = "comit-token-shards"
DEFAULT_SHARD_SIZE = 1000


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


class ImageFiles(Dataset):
    """Image files as a dataset (items like the folder dataset's: ``image``, ``index``)."""

    def __init__(self, paths: Sequence[Path], image_size: int):
        self.paths, self.image_size = list(paths), image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return {"image": load_image(self.paths[index], self.image_size), "index": index}


def dataset_sources(dataset: Dataset, name: str) -> list[str]:
    """A name per image for the shards' metadata: its file where there is one, else ``name#index``."""
    paths = getattr(dataset, "paths", None)
    if paths is not None:
        return [str(path) for path in paths]
    return [f"{name}#{index}" for index in range(len(dataset))]


@dataclass(frozen=True)
class ShardPlan:
    """What a shard folder holds; two runs with the same plan write the same shards."""

    model: str
    settings: dict
    data: str
    num_images: int
    shard_size: int
    sources_sha256: str
    format: str = FORMAT

    @property
    def num_shards(self) -> int:
        return -(-self.num_images // self.shard_size)

    def images_of(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_images))


def plan_shards(model: str, settings: dict, data: str, sources: Sequence[str], shard_size: int) -> ShardPlan:
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    if not sources:
        raise ValueError(f"{data} holds no images to tokenize")
    digest = hashlib.sha256("\n".join(sources).encode()).hexdigest()
    return ShardPlan(model=model, settings=settings, data=data, num_images=len(sources), shard_size=shard_size,
                     sources_sha256=digest)


def read_plan(folder: Path) -> ShardPlan | None:
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError
        return ShardPlan(**{key: raw[key] for key in ShardPlan.__dataclass_fields__})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{path} is not a comit token-shards index; use an empty folder for --output") from None


def claim_folder(folder: Path, plan: ShardPlan) -> list[str]:
    """Write the index, or check that the folder's index is this plan (a resumed run) or an unfinished
    run of the same job over inputs that changed since; returns what was adopted, in words."""
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*.tmp"):  # a killed run's half-written files (atomic_write's names)
        leftover.unlink(missing_ok=True)
    found = read_plan(folder)
    if found == plan:
        return []
    if found is not None:
        check_same_job(folder, found, plan)
    atomic_write_json(folder / INDEX_NAME, asdict(plan))
    if found is None:
        return []
    for extra in range(plan.num_shards, found.num_shards):
        (folder / shard_name(extra)).unlink(missing_ok=True)
    return [f"the inputs changed since {folder} was started ({found.num_images} -> {plan.num_images} images): "
            "shards whose images are unchanged are kept, the others redone"]


def check_same_job(folder: Path, found: ShardPlan, plan: ShardPlan) -> None:
    """Refuse a folder of another job, naming what differs; an unfinished run of this job may differ
    only in its inputs."""
    job = ("model", "settings", "data", "shard_size", "format")
    differing = [key for key in job if getattr(found, key) != getattr(plan, key)]
    if "settings" in differing:
        keys = sorted(k for k in set(found.settings) | set(plan.settings) if found.settings.get(k) != plan.settings.get(k))
        differing[differing.index("settings")] = f"settings: {', '.join(keys)}"
    finished = all((folder / shard_name(shard)).is_file() for shard in range(found.num_shards))
    if differing or finished:
        what = ", ".join(differing) if differing else "a finished run over other inputs: num_images, sources_sha256"
        raise ValueError(f"{folder} holds the shards of another tokenize run ({what} differ); re-run that "
                         "command to finish it, or use a new --output folder")


def shard_problem(folder: Path, plan: ShardPlan, shard: int, sources: Sequence[str]) -> str | None:
    """Why a finished shard is not this plan's (damaged, other images, other settings), or None."""
    try:
        found = load_tokens(folder / shard_name(shard))
    except ValueError as error:
        return str(error)
    images = plan.images_of(shard)
    if len(found.sources) != len(images):
        return f"it holds {len(found.sources)} images, the plan {len(images)}"
    if found.model != plan.model or found.settings != plan.settings:
        return "it was made with another model or other settings"
    if found.sources != [sources[i] for i in images]:
        return "its images are not this run's"
    return None


@dataclass
class ShardsResult:
    folder: Path
    written: int  # shards this process wrote
    skipped: int  # shards this process found already done
    images: int  # images this process tokenized
    seconds: float
    notes: list[str] = field(default_factory=list)  # shards redone, a folder adopted: one line each

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def tokenize_to_shards(model: COMiT, dataset: Dataset, folder: Path, plan: ShardPlan, *, batch_size: int = 32,
                       num_workers: int = 0, rank: int = 0, world_size: int = 1, precision: str = "fp32",
                       sources: Sequence[str], show_progress: bool = True) -> ShardsResult:
    """Tokenize this process's missing (or damaged) shards of ``plan`` into ``folder``."""
    existed, created = folder.exists(), not (folder / INDEX_NAME).is_file()
    notes = claim_folder(folder, plan)
    mine = [shard for shard in range(plan.num_shards) if shard % world_size == rank]
    todo = []
    for shard in mine:
        if not (folder / shard_name(shard)).exists():
            todo.append(shard)
        elif (problem := shard_problem(folder, plan, shard, sources)) is not None:
            notes.append(f"{shard_name(shard)} redone: {problem}")
            (folder / shard_name(shard)).unlink()
            todo.append(shard)
    started, images, written = time.perf_counter(), 0, 0
    bar = progress(total=sum(len(plan.images_of(shard)) for shard in todo), desc="tokenize", unit="img",
                   enabled=show_progress)
    try:
        for shard in todo:
            tokens = tokenize_shard(model, dataset, plan, shard, batch_size, num_workers, precision, bar)
            indices = plan.images_of(shard)
            save_tokens(folder / shard_name(shard), tokens, model=plan.model, fsq_levels=model.config.fsq_levels,
                        settings=plan.settings, sources=[sources[i] for i in indices])
            images, written = images + len(indices), written + 1
    except Exception:
        if created and not any(folder.glob("shard-*.safetensors")):
            # Nothing finished: the folder is left as it was found, so the fixed input starts afresh.
            (folder / INDEX_NAME).unlink(missing_ok=True)
            if not existed and not any(folder.iterdir()):
                folder.rmdir()
        raise
    finally:
        bar.close()
    return ShardsResult(folder=folder, written=written, skipped=len(mine) - len(todo), images=images,
                        seconds=time.perf_counter() - started, notes=notes)


def tokenize_shard(model: COMiT, dataset: Dataset, plan: ShardPlan, shard: int, batch_size: int, num_workers: int,
                   precision: str, bar) -> Tokens:
    generator = torch.Generator().manual_seed(plan.settings["seed"] * 1_000_003 + shard)
    loader = DataLoader(Subset(dataset, list(plan.images_of(shard))), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=stack_images, pin_memory=model.device.type == "cuda")
    return tokenize_batches(model, loader, plan.settings, generator, precision, done=bar.update)


def tokenize_batches(model: COMiT, batches: Iterable[torch.Tensor], settings: dict, generator: torch.Generator,
                     precision: str = "fp32", done: Callable[[int], object] | None = None) -> Tokens:
    """The one loop that tokenizes image batches ([b, 3, S, S] each) into one ``Tokens`` on the CPU:
    ``settings``' order, crops and global crop, at ``precision`` on the model's device, one
    ``generator`` for all; ``done(b)`` after each batch. Files (``comit tokenize``, ``reconstruct``)
    and shards use it."""
    parts = []
    for images in batches:
        with torch.inference_mode(), autocast(model.device, precision):
            parts.append(model.tokenize(images.to(model.device), global_crop=settings["global_crop"],
                                        order=settings["order"], num_crops=settings["num_crops"],
                                        generator=generator).to("cpu"))
        if done is not None:
            done(len(images))
    return Tokens.cat(parts)


def stack_images(items: list[dict]) -> torch.Tensor:
    """Only the pixels travel (datasets' other fields, e.g. the shapes' object lists, do not collate)."""
    return torch.stack([item["image"] for item in items])


class TokenShards(Dataset):
    """A shard folder as a dataset: item ``i`` is image ``i``'s ``ids`` [M], ``messages`` [M, D],
    ``offsets`` [2], ``crop_order`` [K], ``num_crops`` and ``source``. Refuses an unfinished folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        plan = read_plan(self.folder)
        if plan is None:
            raise FileNotFoundError(f"{self.folder} holds no {INDEX_NAME}: not a folder written by comit tokenize")
        missing = [shard for shard in range(plan.num_shards) if not (self.folder / shard_name(shard)).exists()]
        if missing:
            raise ValueError(f"{self.folder} is unfinished: {len(missing)} of {plan.num_shards} shards missing "
                             f"(first: {shard_name(missing[0])}); re-run its tokenize command to finish it")
        self.plan = plan
        self._cached: tuple[int, TokensFile] | None = None

    def __len__(self) -> int:
        return self.plan.num_images

    def shard(self, index: int) -> TokensFile:
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, load_tokens(self.folder / shard_name(index)))
        return self._cached[1]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"image {index} is out of range for {len(self)} tokenized images")
        shard, row = divmod(index, self.plan.shard_size)
        tokens = self.shard(shard)
        t = tokens.tokens
        return {"ids": t.ids[row], "messages": t.messages[row], "offsets": t.offsets[row],
                "crop_order": t.crop_order[:, row], "num_crops": t.num_crops[row], "source": tokens.sources[row]}
