"""The message conveyor: each image's crop sequence is written over consecutive steps, one crop a step.

The paper's step writes K - 1 crops without gradient to reach the message that its one
gradient-carrying write improves; on a small model that prefix is about half of a step's compute,
spent on nothing the optimiser sees. The conveyor keeps every image's message between steps
instead: each step, ``batch`` new images join with the empty message, and every image on the belt
writes its next crop with gradient and is scored on the message it now holds. An image leaves once
its whole sequence (the global crop and every local one, or every local one) is written, so each
of its prefixes K = 1, 2, ... is trained exactly once: K is uniform, as in the paper, and no write
is wasted. The messages an image carries were written by the weights of the steps it passed
through (at most ``length - 1`` steps old), not by the current ones.

The belt lives in buffers of fixed shape (``capacity = batch x length`` slots), so it is saved in
the checkpoint with the weights and a resumed run continues bit for bit. Each process keeps its own
belt; the loop stacks every process's belt into the checkpoint and gives each its own row back
(``Trainer.every_belt`` / ``own_belt``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.autoencoders import encode
from ..model.comit import COMiT
from ..teachers import TeacherFeatures, resample_patches
from .sequences import CropSequences, PendingWrite, sample_sequences

EMPTY = -1  # ``column`` of a free slot


class Conveyor(nn.Module):
    """``capacity`` slots, each holding one image, its latent, crop sequence, written message and
    teacher features, and ``column``: the crop it writes next (EMPTY when the slot is free)."""

    def __init__(self, model: COMiT, batch: int, length: int, teacher_dim: int | None):
        super().__init__()
        config = model.config
        self.batch, self.length = batch, length
        capacity = batch * length
        size, latent = config.image_size, model.latent_shape(1)[1:]
        self.register_buffer("images", torch.zeros(capacity, 3, size, size))
        self.register_buffer("latents", torch.zeros(capacity, *latent))
        self.register_buffer("messages", torch.zeros(capacity, config.num_msg_tokens, model.quantizer.dim))
        self.register_buffer("boxes", torch.zeros(length, capacity, 3, dtype=torch.long))  # top, left, size
        self.register_buffer("count", torch.zeros(capacity, dtype=torch.long))
        self.register_buffer("column", torch.full((capacity,), EMPTY, dtype=torch.long))
        grid = model.predictor.grid_size
        dim = teacher_dim or 0
        self.register_buffer("teacher_patches", torch.zeros(capacity, grid * grid, dim))
        self.register_buffer("teacher_global", torch.zeros(capacity, dim))

    @torch.no_grad()
    def admit(self, model: COMiT, images: torch.Tensor, teacher: TeacherFeatures | None,
              crops: CropSequences) -> None:
        """Put new images, with their crop sequences, on the first free slots (from m0)."""
        free = (self.column == EMPTY).nonzero().flatten()[:images.shape[0]]
        if free.numel() < images.shape[0]:
            raise RuntimeError(f"the conveyor has {free.numel()} free slots for {images.shape[0]} new images: "
                               f"each step must admit at most {self.batch}")
        self.images[free] = images.float()
        self.latents[free] = encode(model.vae, images).float()
        self.messages[free] = model.empty_message(images.shape[0])
        boxes = torch.stack([crops.top, crops.left, crops.size], dim=2).to(self.boxes.device)
        self.boxes[:, free] = 0
        self.boxes[:boxes.shape[0], free] = boxes
        self.count[free] = crops.count.to(self.count.device)
        self.column[free] = 0
        if teacher is not None:
            self.teacher_patches[free] = resample_patches(teacher.patches, model.predictor.grid_size).float()
            self.teacher_global[free] = teacher.global_.float()

    def pending(self, with_teacher: bool) -> tuple[torch.Tensor, PendingWrite]:
        """The occupied slots and what their next write needs."""
        slots = (self.column != EMPTY).nonzero().flatten()
        top, left, size = self.boxes[:, slots].cpu().unbind(dim=2)
        crops = CropSequences(top=top, left=left, size=size, count=self.column[slots].cpu() + 1)
        teacher = TeacherFeatures(patches=self.teacher_patches[slots], global_=self.teacher_global[slots]) \
            if with_teacher else None
        write = PendingWrite(images=self.images[slots], latents=self.latents[slots], crops=crops,
                             messages=self.messages[slots], teacher=teacher)
        return slots, write

    @torch.no_grad()
    def advance(self, slots: torch.Tensor, messages: torch.Tensor) -> None:
        """Keep the messages just written; images whose sequence is complete leave the belt."""
        self.messages[slots] = messages.detach().float()
        self.column[slots] += 1
        done = slots[self.column[slots] >= self.count[slots]]
        self.column[done] = EMPTY


def conveyor_sequences(model: COMiT, batch: int, length: int, global_first_p: float, positions: str) -> CropSequences:
    """Whole sequences for newly admitted images: ``length`` crops with the global crop first,
    all local crops up to ``length`` without it."""
    return sample_sequences(batch, model.crops, 1, length, global_first_p, positions, longest=True)
