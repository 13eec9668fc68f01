"""WebDataset tar shards as a map-style dataset: ``wds:/data/train-{0000..0127}.tar``.

A WebDataset shard is a plain tar whose members are grouped into samples by their name up to the
first dot (``n01440764_10026.jpg`` and ``n01440764_10026.cls`` are one sample). Training here needs
random access (exact resume, the same batches under any number of processes), so instead of
streaming the tars, the dataset indexes each shard once (the members' offsets, read from the tar
headers: no image is decoded) and reads a sample by seeking to it. Brace patterns are expanded
with webdataset's own ``expand_urls``; shards must be local files (or a mounted bucket).

Items are ``{"image": float32 [3, S, S] in [-1, 1], "label": int (the ``.cls`` member, else -1),
"index": int}``, preprocessed exactly like :func:`comit.data.images.load_image`.
"""

from __future__ import annotations

import bisect
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .images import IMAGE_EXTENSIONS, decode_image_bytes
from .indexing import checked_index

WDS_PREFIX = "wds:"
NO_LABEL = -1


@dataclass(frozen=True)
class Member:
    offset: int  # of the member's data in the tar file
    size: int


@dataclass(frozen=True)
class Sample:
    key: str
    image: Member
    label: Member | None


def expand_shards(pattern: str) -> list[Path]:
    try:
        from webdataset.shardlists import expand_urls
    except ImportError as error:
        raise ValueError("wds: datasets need webdataset: pip install 'comit[streaming]'") from error
    paths = [Path(url) for url in expand_urls(pattern)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise ValueError(f"{WDS_PREFIX}{pattern}: {len(missing)} of {len(paths)} shards are not files "
                         f"(first: {missing[0]}); give local tar files, e.g. wds:/data/train-{{0000..0127}}.tar")
    return paths


# The first bytes of the compressed files webdataset also reads; samples are read here by seeking.
COMPRESSED = {b"\x1f\x8b": ("gzip", "gunzip"), b"BZh": ("bzip2", "bunzip2"), b"\xfd7zXZ": ("xz", "unxz"),
              b"\x28\xb5\x2f\xfd": ("zstd", "unzstd")}


def check_uncompressed(path: Path) -> None:
    """Refuse a compressed shard by name: its samples cannot be reached by seeking."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as error:
        raise ValueError(f"{path} cannot be read ({error.strerror})") from None
    for magic, (kind, undo) in COMPRESSED.items():
        if head.startswith(magic):
            raise ValueError(f"{path} is a {kind}-compressed tar; comit reads shards by seeking to each sample, "
                             f"which a compressed stream does not allow: decompress it ({undo}), or write "
                             "shards without compression")


def index_shard(path: Path) -> list[Sample]:
    """The samples of one tar, in the order they are stored, from the member headers alone."""
    images: dict[str, Member] = {}
    labels: dict[str, Member] = {}
    order: list[str] = []
    check_uncompressed(path)
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                directory, _, base = info.name.rpartition("/")
                stem, _, extension = base.partition(".")  # WebDataset: the key ends at the first dot
                key = f"{directory}/{stem}" if directory else stem
                member = Member(info.offset_data, info.size)
                if f".{extension.lower()}" in IMAGE_EXTENSIONS and key not in images:
                    images[key] = member
                    if key not in order:
                        order.append(key)
                elif extension.lower() == "cls":
                    labels[key] = member
    except (tarfile.TarError, OSError) as error:
        raise ValueError(f"{path} is not a readable tar shard ({error})") from None
    return [Sample(key, images[key], labels.get(key)) for key in order]


class TarShardDataset(Dataset):
    def __init__(self, pattern: str, image_size: int, flip: bool = False):
        self.pattern, self.image_size, self.flip = pattern, image_size, flip
        self.shards = expand_shards(pattern)
        self.samples = [index_shard(path) for path in self.shards]
        self.starts = []
        total = 0
        for samples in self.samples:
            self.starts.append(total)
            total += len(samples)
        self.length = total
        if total == 0:
            raise ValueError(f"{WDS_PREFIX}{pattern} holds no image samples ({', '.join(IMAGE_EXTENSIONS)} members)")
        # One open handle per shard and process (workers re-open theirs after fork).
        self._handles: dict[int, object] = {}

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, Sample]:
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, self.samples[shard][index - self.starts[shard]]

    def read(self, shard: int, member: Member) -> bytes:
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = open(self.shards[shard], "rb")  # noqa: SIM115 - kept open
        handle.seek(member.offset)
        return handle.read(member.size)

    def __getitem__(self, index: int) -> dict:
        index = checked_index(index, len(self), f"samples in {WDS_PREFIX}{self.pattern}")
        shard, sample = self.locate(index)
        name = f"{self.shards[shard]}:{sample.key}"
        image = decode_image_bytes(self.read(shard, sample.image), self.image_size, name)
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        label = NO_LABEL
        if sample.label is not None:
            text = self.read(shard, sample.label).decode(errors="replace").strip()
            if not text.lstrip("-").isdigit():
                raise ValueError(f"{name}.cls must hold an integer class, got {text[:20]!r}")
            label = int(text)
        return {"image": image, "label": label, "index": index}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}  # file handles do not travel to workers

    def __repr__(self) -> str:
        return f"TarShardDataset({WDS_PREFIX}{self.pattern}, shards={len(self.shards)}, samples={len(self)})"
