"""Opt-in speed-ups that trade exactness for speed: bf16 autocast and ``torch.compile``.

Everything else that makes inference fast is exact and always on (see benchmarks/README.md).
These two are off by default because their outputs differ from fp32 in the last bits, which can
flip a rounding in FSQ and so change a token:

* ``autocast(device, "bf16")`` runs matmuls and attention in bfloat16 (FSQ, guidance, the ODE
  state and the error maps stay in float32). On a GPU this also lets fused attention pick its
  flash kernel, which needs half precision: it is used for unmasked calls (hard-mode decoding);
  calls with a mask or the released bias use the memory-efficient kernel. On a CPU with AMX
  (Sapphire Rapids and later) bf16 matmuls are several times faster too.
* ``compile_predictor(model)`` compiles the transformer with ``torch.compile`` (in place, so
  the state dict keeps its names). Each new input shape (crop latent, full latent, with or
  without queries) compiles once, which takes tens of seconds to minutes; it pays only for long runs.

CUDA graphs are not used: every shape would need its own capture, and no GPU was available to
show that they pay. Usage::

    with autocast(model.device, "bf16"):
        tokens = model.tokenize(images)
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast(device: torch.device | str, precision: str = "fp32"):
    """A context in which the model runs at ``precision`` ("fp32": no change; "bf16": autocast)."""
    check_precision(precision)
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def compile_predictor(model: nn.Module, mode: str | None = None) -> nn.Module:
    """Compile ``model.predictor`` in place with ``torch.compile`` (``mode`` as torch.compile's)."""
    model.predictor.compile(mode=mode, dynamic=False)
    return model
