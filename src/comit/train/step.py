"""One COMiT training step, top to bottom (paper §3; spec §6).

For a batch of images:

1. draw a crop sequence per image: K crops, with some probability the whole image first;
2. write the message crop by crop from m0; the first K - 1 updates run WITHOUT gradient, only the
   last one carries gradient (through FSQ's straight-through rounding) — the model learns to
   improve a message, not to unroll K steps (``backprop_updates: all``, not the paper's, unrolls);
   with ``conveyor`` (not the paper's) the first K - 1 were written in earlier steps and kept;
3. with some probability replace the message by m0 (so the decoder also learns the unconditional
   velocity that guidance needs);
4. flow matching on the full-image latent, read through the message with the decoding offset
   -loc(last crop): x_t = t x1 + (1 - t) noise, target x1 - noise;
5. REPA: patch states at the tap -> MLP projector -> cosine to the teacher's patch features;
   SREPA: message states at the tap, pooled -> MLP projector -> cosine to the teacher's global feature.

All randomness comes from torch's global generator, seeded per process by the loop, so a step is
reproducible and a resumed run continues exactly.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..model.autoencoders import encode, is_deterministic
from ..model.comit import COMiT
from ..model.crops import crop_size_groups, cut_boxes, step_offsets
from ..model.solvers import path_point
from ..model.transformer import PredictorOutput
from .config import StepConfig
from .losses import flow_matching_loss, negative_cosine, projector, saturation_penalty
from .conveyor import Conveyor, conveyor_sequences
from .latent_cache import CachedLatents
from .sequences import CropSequences, PendingWrite, crops_available, sample_sequences
from ..teachers import TeacherFeatures, resample_patches


# Every term a step can add to the loss, in the order reports show them; ``StepResult.terms`` holds
# those the configuration turns on. Logs and experiment reports read this tuple, so a new term is
# declared here (and weighted in ``TrainingStep.term_weights``) and nowhere else.
LOSS_TERMS = ("fm", "repa", "srepa", "saturation", "readout")


@dataclass
class StepResult:
    """The loss to minimise and its terms, keyed by ``LOSS_TERMS`` names (detached floats are taken
    by the loop)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


class TrainingStep(nn.Module):
    """What trains: the COMiT model and the REPA/SREPA projectors. ``forward`` is one step's loss.

    The autoencoder stays frozen (the SD-VAE in the paper); only the predictor and the projectors
    receive gradients. The offset head has no training target in the paper and is left frozen.
    ``batch``: images per call, needed with ``step.conveyor`` (it sizes the belt).
    """

    def __init__(self, model: COMiT, config: StepConfig, teacher_dim: int | None = None, batch: int | None = None):
        super().__init__()
        self.model = model
        self.config = config
        self.max_crops = config.max_crops or crops_available(model.crops.num_local, config.global_first_p)
        model.quantizer.set_training_options(config.drop_quantization_p, config.corrupt_p,
                                             config.fsq_straight_through)
        if isinstance(model.vae, nn.Module):
            model.vae.requires_grad_(False)
        model.predictor.c_final_layer.requires_grad_(False)
        hidden = model.config.hidden_size
        width = config.projector_hidden or 4 * hidden
        aligned = teacher_dim is not None
        self.repa = projector(hidden, width, teacher_dim) if aligned and config.repa_weight > 0 else None
        srepa_in = hidden if config.srepa_source == "states" else model.config.num_msg_tokens * model.quantizer.dim
        self.srepa = projector(srepa_in, width, teacher_dim) if aligned and config.srepa_weight > 0 else None
        codes = model.config.num_msg_tokens * model.quantizer.dim
        latent = model.config.in_channels * model.config.latent_size ** 2
        # The written codes and the decoding offset (the message's frame) -> the full latent.
        self.readout = projector(codes + 2, width, latent) if config.readout_weight > 0 else None
        if config.conveyor and batch is None:
            raise ValueError("step.conveyor needs the number of images each call admits: pass batch=")
        self.conveyor = Conveyor(model, batch, self.max_crops, teacher_dim) if config.conveyor else None

    def train(self, mode: bool = True) -> "TrainingStep":
        super().train(mode)
        if isinstance(self.model.vae, nn.Module):
            self.model.vae.eval()  # a frozen autoencoder keeps its inference behaviour
        return self

    def forward(self, images: torch.Tensor, teacher: TeacherFeatures | None = None,
                global_only: bool = False, latents: CachedLatents | None = None) -> StepResult:
        """One step's loss; ``global_only``: every sequence is the global crop alone (the warm-up);
        ``latents``: the images' cached autoencoder Gaussians (``data.latent_cache``), else they are encoded."""
        model, cfg = self.model, self.config
        if latents is not None and self.conveyor is not None:
            raise ValueError("the conveyor keeps its own latents; train from a latent cache without step.conveyor")
        # 1-2. The crop sequences and the messages written so far, then the write that carries gradient.
        if self.conveyor is None:
            pending = self.write_prefix(images, teacher, global_only, latents)
        else:
            length, global_first_p = (1, 1.0) if global_only else (self.max_crops, cfg.global_first_p)
            self.conveyor.admit(model, images, teacher, conveyor_sequences(
                model, images.shape[0], length, global_first_p, cfg.crop_positions))
            slots, pending = self.conveyor.pending(teacher is not None)
        images, x1, crops, teacher = pending.images, pending.latents, pending.crops, pending.teacher
        batch = images.shape[0]
        messages, raw = self.observe(images, crops, crops.last(), pending.messages, latents=latents, full=x1)
        if self.conveyor is not None:
            self.conveyor.advance(slots, messages)
        written = messages
        last_location = crops.locations(crops.last(), model.config.image_size).to(images.device)

        # 3. Guidance training: some messages become m0 (mixed in, so the graph stays whole).
        conditional = (torch.rand(batch, device=images.device) >= cfg.unconditional_p)
        messages = torch.where(conditional[:, None, None], messages, model.empty_message(batch))

        # 4. Flow matching on the full latent.
        t = self.sample_time(batch, images.device)
        noise = torch.randn_like(x1)
        xt = path_point(x1, noise, t)
        out = model.predictor(xt, t, messages, -last_location, with_queries=False)
        weights = self.flow_weights(crops, conditional, x1) if cfg.unseen_weight < 1 else None
        terms = {"fm": flow_matching_loss(out.velocity, x1, noise, t, model.config.prediction, cfg.flow_loss,
                                          weights=weights)}
        if cfg.saturation_weight > 0:
            terms["saturation"] = saturation_penalty(raw, cfg.saturation_radius)

        # 5. Alignment to the frozen teacher.
        if teacher is not None:
            terms.update(self.alignment_terms(out, teacher, written, conditional))
        if self.readout is not None:
            # A direct path from the image to the encoder: the codes must say what the latent is,
            # before the flow decoder has learned to read them (the readout is dropped after training).
            guess = self.readout(torch.cat([written.flatten(1), -last_location], dim=1))
            terms["readout"] = F.mse_loss(guess.float(), x1.flatten(1).float())
        weights = self.term_weights()
        loss = sum(weights[name] * value for name, value in terms.items())
        return StepResult(loss=loss, terms=terms)

    def alignment_terms(self, out: PredictorOutput, teacher: TeacherFeatures, written: torch.Tensor,
                        conditional: torch.Tensor) -> dict[str, torch.Tensor]:
        """REPA (patch states to the teacher's patches) and SREPA (the message to its global feature)."""
        cfg, terms = self.config, {}
        if self.repa is not None:
            target = resample_patches(teacher.patches, self.model.predictor.grid_size)
            terms["repa"] = negative_cosine(self.repa(out.patch_states), target)
        if self.srepa is not None:
            target = teacher.global_
            if cfg.srepa_center and target.shape[0] > 1:
                # A teacher's global features share a large common part (DINOv2's CLS does too); a
                # constant message can match that part. Centred, only what sets an image apart counts.
                target = target - target.mean(dim=0, keepdim=True)
            if cfg.srepa_source == "states":
                student, weights = out.message_states.mean(dim=1), conditional.float()
            else:  # the written codes themselves: only the encoder can make them match
                student, weights = written.flatten(1), None
            terms["srepa"] = negative_cosine(self.srepa(student), target, weights=weights)
        return terms

    def term_weights(self) -> dict[str, float]:
        """The weight of each of ``LOSS_TERMS`` in the loss (flow matching is the unit)."""
        cfg = self.config
        return {"fm": 1.0, "repa": cfg.repa_weight, "srepa": cfg.srepa_weight,
                "saturation": cfg.saturation_weight, "readout": cfg.readout_weight}

    def write_prefix(self, images: torch.Tensor, teacher: TeacherFeatures | None, global_only: bool,
                     latents: CachedLatents | None = None) -> PendingWrite:
        """Draw each image's K crops and write the first K - 1 from m0, without gradient unless
        ``backprop_updates=all``; ``global_only``: every sequence is the global crop alone."""
        model, cfg = self.model, self.config
        batch = images.shape[0]
        with torch.no_grad():
            x1 = encode(model.vae, images) if latents is None else latents.full()
        fewest, most, global_first_p = (1, 1, 1.0) if global_only else \
            (cfg.min_crops, self.max_crops, cfg.global_first_p)
        crops = sample_sequences(batch, model.crops, fewest, most, global_first_p, cfg.crop_positions)
        messages = model.empty_message(batch)
        with torch.no_grad() if cfg.backprop_updates == "last" else nullcontext():
            for step in range(crops.length - 1):
                column = torch.full((batch,), step)
                messages, _ = self.observe(images, crops, column, messages, select=column < crops.last(),
                                           latents=latents, full=x1)
        return PendingWrite(images=images, latents=x1, crops=crops, messages=messages, teacher=teacher)

    def observe(self, images: torch.Tensor, crops: CropSequences, column: torch.Tensor, messages: torch.Tensor,
                select: torch.Tensor | None = None, latents: CachedLatents | None = None,
                full: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the message of each selected image with its crop number ``column[b]``; returns
        the new messages and the raw (pre-FSQ) values written (zeros where not selected).
        ``full``: the images' full latents, already encoded (the global crop's, when encoding is deterministic).

        Crops of different sizes (the global crop and local ones) go through the transformer as
        separate batches, because their latents differ in size.
        """
        select = torch.ones(images.shape[0], dtype=torch.bool) if select is None else select
        top, left, size = crops.boxes(column)
        offset = self.offsets(crops, column).to(images.device)
        location = crops.locations(column, self.model.config.image_size).to(images.device)
        updated = messages.clone()
        raw = torch.zeros_like(messages)
        for group in crop_size_groups(size, select):
            crop_size = int(size[group][0])
            with torch.no_grad():
                crop_latents = self.crop_latents(images, top, left, group, crop_size, latents, full)
            on_device = group.to(images.device)
            box = torch.stack([top[group], left[group], size[group]]).to(images.device)
            write = self.model.write(crop_latents, messages[on_device], offset[on_device], location[on_device], box)
            raw[on_device] = write.raw
            updated[on_device] = write.codes
        return updated, raw

    def crop_latents(self, images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, group: torch.Tensor,
                     crop_size: int, cached: CachedLatents | None, full: torch.Tensor | None = None) -> torch.Tensor:
        """The latents of the ``group`` images' crops (all ``crop_size``): encoded, or drawn from the cache."""
        whole = crop_size == self.model.config.image_size
        if cached is None and whole and full is not None and is_deterministic(self.model.vae):
            # The global crop is the image: its latent is the step's flow target, encoded once (16 %
            # of a global-crop step went to encoding it a second time; benchmarks/README.md).
            return full[group.to(full.device)]
        if cached is None:
            pixels = cut_boxes(images[group.to(images.device)], top[group], left[group], crop_size)
            return encode(self.model.vae, pixels)
        rows = group.nonzero().flatten().to(images.device)
        if whole:
            return cached.full(rows)
        grid = self.model.crops
        cells = (top[group] // grid.stride) * grid.grid_size + left[group] // grid.stride
        return cached.crops(rows, cells.to(images.device))

    def flow_weights(self, crops: CropSequences, conditional: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """[B, 1, h, w]: 1 where a crop of the sequence showed the latent cell (or the sample decodes
        from m0), ``unseen_weight`` elsewhere."""
        seen = crops.seen(self.model.config.image_size).float()
        seen = F.adaptive_avg_pool2d(seen, x1.shape[-2:]).to(x1.device)  # the share of each cell's pixels
        seen = torch.where(conditional[:, None, None, None], seen, torch.ones_like(seen))
        return self.config.unseen_weight + (1 - self.config.unseen_weight) * seen

    def offsets(self, crops: CropSequences, column: torch.Tensor) -> torch.Tensor:
        """a_k = loc_k - loc_{k-1}, zero for each image's first crop (the rule tokenize follows)."""
        size = self.model.config.image_size
        current = crops.locations(column, size)
        previous = torch.where((column == 0)[:, None], current, crops.locations((column - 1).clamp(min=0), size))
        return step_offsets(current, previous)

    def sample_time(self, batch: int, device: torch.device) -> torch.Tensor:
        if self.config.t_sampling == "logit_normal":
            return torch.sigmoid(self.config.t_mean + self.config.t_std * torch.randn(batch)).to(device)
        return torch.rand(batch).to(device)
