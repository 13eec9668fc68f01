"""Reading images crop by crop: the state machine behind ``COMiT.tokenize``.

Start from the empty message (or resumed tokens); ask the crop policy for each next crop, observe
it with every image still reading and write the message; between crops, the one-step
reconstruction's error steers the adaptive policy and stops images whose error budget is met.
The model comes in as an argument (``ModelParts``), so this module sits below ``comit.py``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from .autoencoders import encode
from .crops import crop_size_groups, step_offsets
from .parts import ModelParts
from .policies import CropPlan, CropPolicy, CropStep


@dataclass
class Tokens:
    """The result of :meth:`COMiT.tokenize`.

    messages: [B, M, D] FSQ codes in [-1, 1].
    offsets: [B, 2] decoding offsets (-location of each image's last crop).
    ids: [B, M] int64 token ids.
    crop_order: [K, B] int64 crop indices used, in order (index 0 is the global crop when
        ``global_crop``); -1 where an image stopped early under an error budget.
    num_crops: [B] int64 crops each image actually used.
    global_crop: whether the index space includes the global crop.
    """

    messages: torch.Tensor
    offsets: torch.Tensor
    ids: torch.Tensor
    crop_order: torch.Tensor
    num_crops: torch.Tensor
    global_crop: bool = False

    def to(self, device) -> "Tokens":
        return replace(self, **{f.name: getattr(self, f.name).to(device)
                                for f in fields(self) if torch.is_tensor(getattr(self, f.name))})

    def __len__(self) -> int:
        return self.messages.shape[0]

    @classmethod
    def cat(cls, parts: Sequence["Tokens"]) -> "Tokens":
        """Batches of one tokenize setting, joined (crop_order along its image axis)."""
        if not parts:
            raise ValueError("Tokens.cat needs at least one part")
        if len({part.global_crop for part in parts}) > 1 or len({part.crop_order.shape[0] for part in parts}) > 1:
            raise ValueError("Tokens.cat joins parts made with the same global_crop and number of crops")
        joined = {f.name: torch.cat([getattr(part, f.name) for part in parts], dim=1 if f.name == "crop_order" else 0)
                  for f in fields(cls) if f.name != "global_crop"}
        return cls(**joined, global_crop=parts[0].global_crop)


@dataclass
class Reading:
    """What has been read so far, per image.

    previous: [B, 2] location of each image's last crop (None before any); history: the crop
    indices of each step, -1 where an image had stopped; used: [B] crops read; seen: [B, N] crops
    read; active: [B] images still reading (an error budget stops them).
    """

    messages: torch.Tensor
    previous: torch.Tensor | None
    history: list[torch.Tensor]
    used: torch.Tensor
    seen: torch.Tensor
    active: torch.Tensor


@dataclass
class ReconstructionError:
    """windows: [B, g²] mean squared error (summed over RGB) inside each local crop's window;
    mse: [B] mean squared error per pixel and channel."""

    windows: torch.Tensor
    mse: torch.Tensor


def read_steps(model: ModelParts, images: torch.Tensor, global_crop: bool, policy: CropPolicy, num_crops: int | None,
               noise: torch.Tensor | None, generator: torch.Generator | None, resume: Tokens | None,
               error_budget: float | None, error_signal: str) -> Generator[Tokens, None, Tokens]:
    """Yield the tokens after each crop; return the final tokens, also when an error budget stops
    before any crop. ``images`` and ``noise`` are checked and on the model's device."""
    batch = images.shape[0]
    reading = start_reading(model, resume, batch, global_crop)
    plan = plan_crops(model, policy, reading.seen, num_crops, global_crop, generator, resumed=resume is not None)
    track_errors = policy.reads_errors or error_budget is not None
    if track_errors and noise is None:  # drawn after the plan: random orders take the generator first
        noise = torch.randn(model.latent_shape(batch), generator=generator).to(model.device)
    targets = encode(model.vae, images, generator) if track_errors and error_signal == "latent" and \
        (plan.steps > 1 or resume is not None) else None
    errors = one_step_errors(model, images, reading.messages, -reading.previous, noise, targets) \
        if track_errors and resume is not None else None
    tokens = None
    for step in range(plan.steps):
        if error_budget is not None and errors is not None:
            reading.active &= errors.mse > error_budget
            if not bool(reading.active.any()):
                break
        windows = None if errors is None else errors.windows
        indices = policy.choose(CropStep(step, plan, model.crops, global_crop, reading.seen, windows))
        read_crops(model, images, indices, reading, global_crop, generator)
        tokens = tokens_of(model, reading, global_crop)
        yield tokens
        # The last crop's errors would steer nothing; a caller that stops early never pays for them.
        errors = one_step_errors(model, images, reading.messages, -reading.previous, noise, targets) \
            if track_errors and step + 1 < plan.steps else None
    return tokens if tokens is not None else tokens_of(model, reading, global_crop)


def start_reading(model: ModelParts, resume: Tokens | None, batch: int, global_crop: bool) -> Reading:
    seen = seen_mask(model, resume, batch, global_crop)
    active = torch.ones(batch, dtype=torch.bool, device=model.device)
    if resume is None:
        return Reading(messages=model.empty_message(batch), previous=None, history=[],
                       used=torch.zeros(batch, dtype=torch.long, device=model.device), seen=seen, active=active)
    resume = resume.to(model.device)
    return Reading(messages=resume.messages.clone(), previous=-resume.offsets, history=list(resume.crop_order),
                   used=resume.num_crops.clone(), seen=seen, active=active)


def plan_crops(model: ModelParts, policy: CropPolicy, seen: torch.Tensor, num_crops: int | None, global_crop: bool,
               generator: torch.Generator | None, resumed: bool) -> CropPlan:
    """The policy's schedule on the model's device; a resumed fixed order may not revisit a crop."""
    available = int((~seen).sum(1).min()) if resumed else None
    plan = policy.plan(model.crops, seen.shape[0], num_crops, global_crop, generator, available)
    if plan.order is None:
        return plan
    plan = replace(plan, order=plan.order.to(model.device))
    if resumed:
        check_unseen(plan.order, seen)
    return plan


def read_crops(model: ModelParts, images: torch.Tensor, indices: torch.Tensor, reading: Reading, global_crop: bool,
               generator: torch.Generator | None) -> None:
    """Observe crop ``indices`` [B] with every active image and record it in ``reading``."""
    active = reading.active
    location = model.crops.locations(indices, global_crop)
    offset = step_offsets(location, reading.previous)
    reading.messages = observe(model, images, indices, reading.messages, offset, location, global_crop,
                               generator, active)
    reading.previous = location if reading.previous is None else \
        torch.where(active[:, None], location, reading.previous)
    reading.seen[torch.arange(images.shape[0], device=model.device)[active], indices[active]] = True
    reading.history.append(torch.where(active, indices, torch.full_like(indices, -1)))
    reading.used = reading.used + active.long()  # a new tensor: tokens already yielded keep their count


def tokens_of(model: ModelParts, reading: Reading, global_crop: bool) -> Tokens:
    batch = reading.messages.shape[0]
    crop_order = torch.stack(reading.history) if reading.history else torch.empty(0, batch, dtype=torch.long)
    return Tokens(messages=reading.messages, offsets=-reading.previous,
                  ids=model.quantizer.codes_to_indices(reading.messages), crop_order=crop_order,
                  num_crops=reading.used, global_crop=global_crop)


def observe(model: ModelParts, images: torch.Tensor, indices: torch.Tensor, messages: torch.Tensor,
            offset: torch.Tensor, location: torch.Tensor, global_crop: bool, generator: torch.Generator | None,
            active: torch.Tensor) -> torch.Tensor:
    """One message update per active image; crops of each size run as one batch (their latents
    differ in size), the largest (the global crop) first."""
    updated = messages.clone()
    box = model.crops.box_table(global_crop).to(model.device)[indices].T
    for group in crop_size_groups(box[2], active):
        pixels = images[group] if int(box[2][group][0]) == model.config.image_size else \
            model.crops.cut(images[group], indices[group], global_crop)
        latents = encode(model.vae, pixels, generator)
        updated[group] = model.write_message(latents, messages[group], offset[group], location[group], box[:, group])
    return updated


def one_step_errors(model: ModelParts, images: torch.Tensor, messages: torch.Tensor, offsets: torch.Tensor,
                    noise: torch.Tensor, latents: torch.Tensor | None = None) -> ReconstructionError:
    """Error of a one-step reconstruction (guidance 1) from the current messages: decoded and
    compared with the images, or compared with the images' ``latents`` when given."""
    t = torch.zeros(noise.shape[0], device=noise.device)
    recon = noise + model.velocity(noise, t, messages, offsets)
    reference = images if latents is None else latents
    if latents is None:
        recon = model.vae.decode(recon).float()
    error_map = (recon - reference).pow(2).sum(dim=1, keepdim=True)
    if latents is not None:  # spread each latent cell over its pixels, so windows stay in pixels
        error_map = F.interpolate(error_map, scale_factor=model.vae.downsample, mode="nearest")
    return ReconstructionError(windows=model.crops.window_errors(error_map),
                               mse=error_map.mean(dim=(1, 2, 3)) / reference.shape[1])


def seen_mask(model: ModelParts, resume: Tokens | None, batch: int, global_crop: bool) -> torch.Tensor:
    seen = torch.zeros(batch, model.crops.num_indices(global_crop), dtype=torch.bool, device=model.device)
    if resume is not None:
        for column in resume.crop_order.to(model.device):
            valid = column >= 0
            seen[torch.arange(batch, device=model.device)[valid], column[valid]] = True
    return seen


def check_unseen(plan: torch.Tensor, seen: torch.Tensor) -> None:
    revisited = seen.gather(1, plan.T)
    if bool(revisited.any()):
        raise ValueError("the crop order revisits crops the resumed tokens have already seen; "
                         "give only new crop indices")
