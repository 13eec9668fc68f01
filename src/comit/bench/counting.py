"""Count the expensive calls one operation makes: transformer calls (with their sizes) and VAE
encodes and decodes. Counts are exact and machine-independent, so they show where work was
saved even when timings are noisy."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .flops import CallFlops, transformer_call_flops


@dataclass
class CallLog:
    """transformer: (batch, latent side, with_queries) per call, and whether autograd recorded it
    (``transformer_grad``); vae_encode / vae_decode: input shapes per call."""

    transformer: list[tuple[int, int, bool]] = field(default_factory=list)
    transformer_grad: list[bool] = field(default_factory=list)
    vae_encode: list[tuple[int, ...]] = field(default_factory=list)
    vae_decode: list[tuple[int, ...]] = field(default_factory=list)

    def transformer_flops(self, model) -> CallFlops:
        parts = [transformer_call_flops(model.predictor, b, side, q) for b, side, q in self.transformer]
        return CallFlops(*(sum(getattr(p, name) for p in parts)
                           for name in ("tokens", "per_token_weights", "attention", "per_sample")))

    def training_flops(self, model) -> int:
        """Forward FLOPs of every call plus 2x (the backward pass) for the calls autograd recorded."""
        total = 0
        for (batch, side, queries), grad in zip(self.transformer, self.transformer_grad):
            total += transformer_call_flops(model.predictor, batch, side, queries).total * (3 if grad else 1)
        return total

    def summary(self, model) -> dict:
        """Numbers of calls, the samples and tokens they carried, and the transformer's FLOPs."""
        flops = self.transformer_flops(model)
        return {
            "transformer_calls": len(self.transformer),
            "transformer_samples": sum(b for b, _, _ in self.transformer),
            "transformer_tokens": flops.tokens,
            "transformer_flops": flops.total,
            "vae_encodes": len(self.vae_encode),
            "vae_decodes": len(self.vae_decode),
        }


@contextmanager
def count_calls(model) -> Iterator[CallLog]:
    """Record every transformer call and VAE encode/decode of ``model`` (a COMiT) inside the block."""
    log = CallLog()
    predictor = model.predictor

    def on_forward(module, args, kwargs):
        x = args[0] if args else kwargs["x"]
        with_queries = kwargs.get("with_queries", args[4] if len(args) > 4 else True)
        log.transformer.append((x.shape[0], x.shape[-1], bool(with_queries) or module.attention == "released"))
        log.transformer_grad.append(torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()))

    handle = predictor.register_forward_pre_hook(on_forward, with_kwargs=True)
    restore = [_wrap_method(model.vae, "encode", log.vae_encode), _wrap_method(model.vae, "decode", log.vae_decode)]
    try:
        yield log
    finally:
        handle.remove()
        for undo in restore:
            undo()


def _wrap_method(owner, name: str, calls: list) -> callable:
    """Replace ``owner.name`` by a recording wrapper (same signature, so ``encode``'s generator
    detection still works) and return the function that puts the original back."""
    had_own = name in vars(owner)
    original = getattr(owner, name)

    @functools.wraps(original)
    def recording(images: torch.Tensor, *args, **kwargs):
        calls.append(tuple(images.shape))
        return original(images, *args, **kwargs)

    object.__setattr__(owner, name, recording)

    def undo() -> None:
        if had_own:
            object.__setattr__(owner, name, original)
        else:
            object.__delattr__(owner, name)

    return undo
