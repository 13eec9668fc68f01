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
from .atomic import atomic_write
from .model.comit import COMiT, Tokens

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
    tokens = Tokens(**{name: tensors[name] for name in TENSORS}, global_crop=json.loads(meta.get("global_crop", "false")))
    return TokensFile(tokens=tokens, model=meta["model"], settings=json.loads(meta.get("settings", "{}")),
                      sources=json.loads(meta.get("sources", "[]")) or [f"{i}" for i in range(len(tokens))],
                      fsq_levels=json.loads(meta.get("fsq_levels", "[]")))
