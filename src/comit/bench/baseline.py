"""The plain path: the released inference code's call pattern, re-enacted with our components.

The released code cannot be downloaded here. To measure our fast paths side by side on the same
machine, and to test that they leave outputs unchanged, this module re-enacts the call pattern
that the performance issue describes, built from this project's transformer, FSQ, crops, APG
and autoencoder (it is NOT the released code):

* adaptive tokenize — before choosing each next crop it re-tokenizes the whole prefix from the
  empty message, encoding every crop through the VAE again; the one-step reconstruction runs the
  conditional and an unconditional pass (guidance weight 1, a no-op) as two calls and is decoded
  to pixels, also after the last crop; the chosen order is then tokenized once more from scratch.
  3 crops: 15 transformer calls, 9 crop encodes, 3 decodes (``COMiT.tokenize``: 5, 3 and 2).
* detokenize — every transformer call keeps the query tokens (1 + N + 2M tokens), and each guided
  step runs the conditional and unconditional passes as separate calls, the unconditional one
  even at guidance weight 1. Flags switch each of these back to the fast form one at a time, so
  the benchmark can price them separately.

Both run under ``torch.no_grad`` (not inference mode), the conservative guess for the released
code, with the SD-VAE in its default memory layout (see :func:`default_vae_layout`). Results
equal ``COMiT.tokenize`` / ``COMiT.detokenize`` (same crop orders, same tokens, same images to
float round-off): ``tests/test_fast_paths.py`` checks that.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..model.autoencoders import encode
from ..model.comit import COMiT, Tokens
from ..model.crops import step_offsets
from ..model.guidance import APGuidance
from ..model.solvers import integrate


@contextmanager
def vae_layout(model: COMiT, channels_last: bool) -> Iterator[None]:
    """Set the SD-VAE's input layout for a while (autoencoders without the option are left alone)."""
    previous = getattr(model.vae, "channels_last", None)
    if previous is not None:
        model.vae.channels_last = channels_last
    try:
        yield
    finally:
        if previous is not None:
            model.vae.channels_last = previous


def default_vae_layout(model: COMiT):
    """The SD-VAE with inputs in the default (contiguous) layout, as diffusers uses it."""
    return vae_layout(model, channels_last=False)


@torch.no_grad()
def tokenize_prefix(model: COMiT, images: torch.Tensor, order: list[torch.Tensor], global_crop: bool,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Messages and decoding offsets after observing ``order`` (a list of [B] crop indices, one
    kind of crop per step), from the empty message, encoding every crop."""
    messages, previous = model.empty_message(images.shape[0]), None
    for indices in order:
        location = model.crops.locations(indices, global_crop)
        is_global = model.crops.is_global(indices, global_crop)
        if bool(is_global.any()) and not bool(is_global.all()):
            raise ValueError("the baseline handles one kind of crop (global or local) per step")
        pixels = images if bool(is_global.all()) else model.crops.cut(images, indices, global_crop)
        latents = encode(model.vae, pixels, generator)
        ones = torch.ones(images.shape[0], device=images.device)
        raw = model.predictor(latents, ones, messages, step_offsets(location, previous)).message
        messages, previous = model.quantizer(raw), location
    return messages, -previous


@torch.no_grad()
def one_step_reconstruction(model: COMiT, noise: torch.Tensor, messages: torch.Tensor,
                            offsets: torch.Tensor) -> torch.Tensor:
    """One guided Euler step at weight 1 with both passes run, decoded to pixels."""
    zeros = torch.zeros(noise.shape[0], device=noise.device)
    v_cond = model.predictor(noise, zeros, messages, offsets).velocity
    v_uncond = model.predictor(noise, zeros, model.empty_message(noise.shape[0]), offsets).velocity
    velocity = APGuidance(cfg_weight=1.0, momentum=-0.5)(v_cond, v_uncond)
    return model.vae.decode(noise + velocity).float()


@torch.no_grad()
def tokenize_adaptive(model: COMiT, images: torch.Tensor, noise: torch.Tensor, num_crops: int = 3,
                      global_crop: bool = False, generator: torch.Generator | None = None) -> Tokens:
    """The adaptive order as the released code computes it (see the module docstring); one
    visited mask per image, as in ``COMiT.tokenize``."""
    with default_vae_layout(model):
        return _tokenize_adaptive(model, images, noise, num_crops, global_crop, generator)


def _tokenize_adaptive(model: COMiT, images: torch.Tensor, noise: torch.Tensor, num_crops: int,
                       global_crop: bool, generator: torch.Generator | None) -> Tokens:
    images = images.to(model.device, torch.float32)
    noise = noise.to(model.device, torch.float32)
    batch = images.shape[0]
    first = 0 if global_crop else model.crops.centre_index()
    order = [torch.full((batch,), first, dtype=torch.long, device=model.device)]
    seen = torch.zeros(batch, model.crops.num_local, dtype=torch.bool, device=model.device)
    if not global_crop:
        seen[:, first] = True
    for step in range(num_crops):
        messages, offsets = tokenize_prefix(model, images, order, global_crop, generator)
        recon = one_step_reconstruction(model, noise, messages, offsets)
        errors = model.crops.window_errors((recon - images).pow(2).sum(dim=1, keepdim=True))
        if step + 1 < num_crops:
            choice = errors.masked_fill(seen, float("-inf")).argmax(dim=1)
            seen[torch.arange(batch, device=model.device), choice] = True
            order.append(choice + int(global_crop))
    messages, offsets = tokenize_prefix(model, images, order, global_crop, generator)
    return Tokens(messages=messages, offsets=offsets, ids=model.quantizer.codes_to_indices(messages),
                  crop_order=torch.stack(order), num_crops=torch.full((batch,), len(order), device=model.device),
                  global_crop=global_crop)


def velocity_function(model: COMiT, messages: torch.Tensor, offsets: torch.Tensor, cfg_weight: float,
                      momentum: float = -0.5, keep_queries: bool = True, batch_passes: bool = False,
                      skip_unconditional_at_1: bool = False):
    """v(x, t) for the solver. The defaults are the released pattern; each flag turns one fast
    path on. Guidance is off at weight 0 in both (the spec applies it only for w > 0)."""
    empty = model.empty_message(messages.shape[0])

    def call(x, t, message, offset):
        return model.predictor(x, t, message, offset, with_queries=keep_queries).velocity

    if cfg_weight == 0 or (skip_unconditional_at_1 and cfg_weight == 1):
        return lambda x, t: call(x, t, messages, offsets)
    guidance = APGuidance(cfg_weight, momentum)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if batch_passes:
            v_cond, v_uncond = call(torch.cat([x, x]), torch.cat([t, t]), torch.cat([messages, empty]),
                                    torch.cat([offsets, offsets])).chunk(2)
        else:
            v_cond, v_uncond = call(x, t, messages, offsets), call(x, t, empty, offsets)
        return guidance(v_cond, v_uncond)

    return velocity


@torch.no_grad()
def detokenize(model: COMiT, messages: torch.Tensor, offsets: torch.Tensor, noise: torch.Tensor,
               num_steps: int = 10, cfg_weight: float = 7.5, momentum: float = -0.5, decode: bool = True,
               **fast_paths) -> torch.Tensor:
    """Euler decoding in the released pattern; ``fast_paths`` as in :func:`velocity_function`."""
    messages = messages.to(model.device, torch.float32)
    offsets = offsets.to(model.device, torch.float32)
    velocity = velocity_function(model, messages, offsets, cfg_weight, momentum, **fast_paths)
    latents = integrate(velocity, noise.to(model.device, torch.float32), num_steps, "euler")
    if not decode:
        return latents
    with default_vae_layout(model):
        return model.vae.decode(latents).float()
