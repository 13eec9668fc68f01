"""Token files: messages saved by ``comit tokenize`` and read by ``comit detokenize``.

A safetensors file with tensors ``ids`` [B, M], ``messages`` [B, M, D], ``offsets`` [B, 2],
``crop_order`` [K, B], ``num_crops`` [B] and string metadata: the model, the tokenize settings,
the source file names, the FSQ levels and the comit version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .io import atomic_write
from .model.comit import COMiT, Tokens
from .model.fsq import FSQ

TENSORS = ("ids", "messages", "offsets", "crop_order", "num_crops")


@dataclass
class TokensFile:
    tokens: Tokens
    model: str
    settings: dict
    sources: list[str]
    fsq_levels: list[int]

    def check_compatible(self, model: COMiT) -> None:
        expected = (model.config.num_msg_tokens, list(model.config.fsq_levels))
        found = (self.tokens.messages.shape[1], self.fsq_levels)
        if expected != found:
            raise ValueError(f"tokens were made for {found[0]} tokens with FSQ levels {found[1]}, but the model "
                             f"uses {expected[0]} tokens with levels {expected[1]}; pass the right --model")
        crops = model.crops.num_local + int(self.tokens.global_crop)
        if self.tokens.crop_order.numel() and int(self.tokens.crop_order.max()) >= crops:
            raise ValueError(f"crop_order holds crop {int(self.tokens.crop_order.max())}, but the model has {crops} "
                             "crops; pass the right --model")


def save_tokens(path: str | Path, tokens: Tokens, model: str, fsq_levels: list[int], settings: dict,
                sources: list[str]) -> Path:
    path = Path(path)
    tensors = {name: getattr(tokens, name).detach().cpu().contiguous() for name in TENSORS}
    metadata = {"model": str(model), "settings": json.dumps(settings), "sources": json.dumps(sources),
                "global_crop": json.dumps(tokens.global_crop), "comit_version": __version__,
                "fsq_levels": json.dumps(list(fsq_levels))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def load_tokens(path: str | Path) -> TokensFile:
    """Read a tokens file, checking every tensor's shape, dtype and range and that they agree."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokens file {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, RuntimeError) as error:
        raise ValueError(f"{path} is truncated or not a tokens file ({error})") from error
    missing = [name for name in TENSORS if name not in tensors]
    if missing or "model" not in meta:
        raise ValueError(f"{path} is not a comit tokens file (missing {missing or ['metadata']})")
    levels = _metadata(meta, "fsq_levels", path, list, [])
    tokens = Tokens(**{name: tensors[name] for name in TENSORS},
                    global_crop=_metadata(meta, "global_crop", path, bool, False))
    try:
        check_tokens(tokens, levels)
    except ValueError as error:
        raise ValueError(f"{path}: {error}; it was not written by comit tokenize, or was changed since") from None
    sources = _metadata(meta, "sources", path, list, None)
    if sources is None:
        sources = [f"{i}" for i in range(len(tokens))]
    elif len(sources) != len(tokens) or not all(isinstance(source, str) for source in sources):
        raise ValueError(f"{path}: metadata 'sources' must list one name per message ({len(tokens)}), "
                         f"got {len(sources)} entries")
    return TokensFile(tokens=tokens, model=meta["model"], settings=_metadata(meta, "settings", path, dict, {}),
                      sources=sources, fsq_levels=levels)


def _metadata(meta: dict, key: str, path: Path, kind: type, default):
    if key not in meta:
        return default
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError:
        raise ValueError(f"{path}: metadata {key!r} is not JSON ({meta[key][:40]!r})") from None
    if not isinstance(value, kind):
        raise ValueError(f"{path}: metadata {key!r} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def check_tokens(tokens: Tokens, levels: list[int]) -> None:
    """Shapes, dtypes and ranges of every tensor, and their agreement (ids <-> messages)."""
    messages, ids = tokens.messages, tokens.ids
    if not levels or not all(isinstance(level, int) and level >= 2 for level in levels):
        raise ValueError(f"metadata 'fsq_levels' must be a list of integers >= 2, got {levels}")
    if messages.dim() != 3 or messages.shape[2] != len(levels) or not messages.is_floating_point():
        raise ValueError(f"messages must be float [B, M, {len(levels)}], got {messages.dtype} {list(messages.shape)}")
    batch, num_tokens = messages.shape[:2]
    expect = {"ids": ((batch, num_tokens), False), "offsets": ((batch, 2), True), "num_crops": ((batch,), False)}
    for name, (shape, floating) in expect.items():
        tensor = getattr(tokens, name)
        if tuple(tensor.shape) != shape or tensor.is_floating_point() != floating:
            kind = "float" if floating else "integer"
            raise ValueError(f"{name} must be {kind} {list(shape)} to match messages {list(messages.shape)}, "
                             f"got {tensor.dtype} {list(tensor.shape)}")
    order = tokens.crop_order
    if order.dim() != 2 or order.shape[1] != batch or order.is_floating_point():
        raise ValueError(f"crop_order must be integer [K, {batch}], got {order.dtype} {list(order.shape)}")
    if not (bool(torch.isfinite(messages).all()) and bool(torch.isfinite(tokens.offsets).all())):
        raise ValueError("messages or offsets hold NaN or Inf")
    quantizer = FSQ(levels)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= quantizer.codebook_size):
        raise ValueError(f"ids must lie in [0, {quantizer.codebook_size}), got [{int(ids.min())}, {int(ids.max())}]")
    quantizer.check_codes(messages)
    if not torch.equal(quantizer.codes_to_indices(messages), ids.long()):
        raise ValueError("ids and messages disagree (the ids are not the messages' code ids)")
    used = tokens.num_crops
    if used.numel() and (int(used.min()) < 0 or int(used.max()) > order.shape[0]):
        raise ValueError(f"num_crops must lie in [0, {order.shape[0]}] (the rows of crop_order)")
    if order.numel() and int(order.min()) < -1:
        raise ValueError(f"crop_order holds {int(order.min())}; crop indices are >= 0 (-1: not used)")
