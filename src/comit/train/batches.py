"""Which images each process trains on at each step: a deterministic stream, so a run resumes
exactly where it stopped and every process of a distributed run takes its own share.

The global stream is one permutation of the dataset per epoch (seeded by (seed, epoch)). Step s
consumes stream positions [s * B, (s + 1) * B) for the global batch B; micro-step m of that step
takes its m-th slice, and process r the r-th part of that slice.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset


class StepBatches:
    """Index lists for one process: one list per micro-step, from ``start_step`` on (endless)."""

    def __init__(self, dataset_size: int, batch_size: int, grad_accum: int, rank: int, world_size: int,
                 seed: int, start_step: int = 0):
        if dataset_size < 1:
            raise ValueError("the training dataset is empty")
        self.size, self.batch_size, self.grad_accum = dataset_size, batch_size, grad_accum
        self.rank, self.world_size, self.seed, self.start_step = rank, world_size, seed, start_step
        self.micro = batch_size // (grad_accum * world_size)
        self._epoch, self._order = -1, None

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            for micro_step in range(self.grad_accum):
                first = step * self.batch_size + (micro_step * self.world_size + self.rank) * self.micro
                yield [self.at(position) for position in range(first, first + self.micro)]
            step += 1

    def at(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.size, generator=generator)
        return int(self._order[offset])


def step_loader(dataset: Dataset, batches: StepBatches, num_workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader over the step stream; workers render or read images, the order stays fixed."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)
