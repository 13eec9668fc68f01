"""Attention probe: how much does a frozen message tell about a task?

Query slots read a message by attention: one learned query, plus one slot per question id when the
task asks a question about the message ("where is <a> relative to <b>?"). In each of ``depth``
layers the slots attend to the message tokens and to each other (pre-norm, then an MLP); the
message tokens themselves are only embedded (a learned vector per id, or an MLP of the FSQ code,
plus a learned position). A head reads all slots together.

Why this shape (measured, docs/evaluation.md "Probes that can read"): a probe must read the answer
where a message certainly holds it. On the true scene written as tokens, the transformer over the
message with one class token that this module was until 2026-12-07 stayed at chance on the
relational task (0.245 top-1, chance 0.25), and so did query slots whose head read one slot
(0.29-0.37 on 2,000-16,000 images): the question needs object a's place and object b's at once.
With the head over every slot, each question slot finds its own object in one attention step and
the head compares them: 0.89 on 2,000 images. Updating only the query slots in each layer, not every
message token, also makes the probe cheaper than a transformer over the message.
The probe is trained alone; the tokenizer only produced the messages.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import progress as progress_bar

InputKind = Literal["ids", "codes"]


class ReadingLayer(nn.Module):
    """One probe layer: the slots attend to the message and to each other, then an MLP (pre-norm)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm_slots = nn.LayerNorm(dim)
        self.norm_message = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, slots: torch.Tensor, message: torch.Tensor) -> torch.Tensor:
        normed = self.norm_slots(slots)
        context = torch.cat([self.norm_message(message), normed], dim=1)
        slots = slots + self.attention(normed, context, context, need_weights=False)[0]
        return slots + self.mlp(self.norm_mlp(slots))


class AttentionProbe(nn.Module):
    """Query slots that read a message by attention, and a head over the slots (module docstring).

    Args:
        num_classes: number of output classes.
        input: ``"ids"`` for token ids ``[B, M]`` (int64, embedded with ``nn.Embedding``) or
            ``"codes"`` for FSQ codes ``[B, M, code_dim]`` (float, embedded by a small MLP).
        vocab_size: number of token ids (``input="ids"``).
        code_dim: FSQ code dimension (``input="codes"``).
        num_positions: maximum message length M (one learned position embedding each).
        dim, heads, depth, mlp_ratio, dropout: slot width, attention heads, layers, MLP expansion
            and dropout.
        question_vocab, question_length: a probe that answers a question about the message
            (e.g. "where is object a relative to object b?") reads ``question_length`` extra ids
            in ``[0, question_vocab)`` appended after the message; see :func:`append_question`.
            Each becomes a query slot of its own (its embedding plus its place in the question).
    """

    def __init__(self, num_classes: int, input: InputKind = "ids", vocab_size: int = 64000,
                 code_dim: int = 6, num_positions: int = 256, dim: int = 64, heads: int = 4,
                 depth: int = 2, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 question_vocab: int = 0, question_length: int = 0) -> None:
        super().__init__()
        if input not in ("ids", "codes"):
            raise ValueError(f'input must be "ids" or "codes", got {input!r}')
        if question_length < 0 or (question_length > 0) != (question_vocab > 0):
            raise ValueError(f"question_vocab and question_length must both be > 0 (a question) "
                             f"or both 0, got {question_vocab} and {question_length}")
        self.input = input
        self.num_positions = num_positions
        self.question_length = question_length
        if question_length:
            self.question_embed = nn.Embedding(question_vocab, dim)
            self.question_pos = nn.Parameter(torch.randn(1, question_length, dim) * 0.02)
        self.embed = nn.Embedding(vocab_size, dim) if input == "ids" else \
            nn.Sequential(nn.Linear(code_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_positions, dim) * 0.02)
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ReadingLayer(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        slots = 1 + question_length
        self.head = nn.Sequential(nn.Linear(slots * dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, num_classes))

    @property
    def num_classes(self) -> int:
        return self.head[-1].out_features

    def _split_question(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Message part and question ids ``[B, question_length]`` (None without a question)."""
        if not self.question_length:
            return x, None
        if x.shape[1] <= self.question_length:
            raise ValueError(f"input of length {x.shape[1]} holds no message before its "
                             f"{self.question_length} question positions")
        tail = x[:, -self.question_length:]
        question = tail[..., 0] if self.input == "codes" else tail
        if question.is_floating_point():
            question = question.round().long()
        vocab = self.question_embed.num_embeddings
        if question.numel() and (question.min() < 0 or question.max() >= vocab):
            raise ValueError(f"question ids must lie in [0, {vocab}), got range "
                             f"[{int(question.min())}, {int(question.max())}]")
        return x[:, :-self.question_length], question

    def _check(self, x: torch.Tensor) -> None:
        if self.input == "codes" and (x.ndim != 3 or not x.dtype.is_floating_point):
            raise ValueError(f"codes probe expects float codes [B, M, D], got {x.dtype} "
                             f"{tuple(x.shape)}")
        if self.input == "ids":
            if x.ndim != 2 or x.dtype.is_floating_point:
                raise ValueError(f"ids probe expects integer ids [B, M], got {x.dtype} "
                                 f"{tuple(x.shape)}")
            vocab = self.embed.num_embeddings
            if x.numel() and (x.min() < 0 or x.max() >= vocab):
                # nn.Embedding would only say "index out of range in self".
                raise ValueError(f"token ids must lie in [0, {vocab}), got range "
                                 f"[{int(x.min())}, {int(x.max())}]")
        if x.shape[1] > self.num_positions:
            raise ValueError(f"message length {x.shape[1]} exceeds num_positions "
                             f"{self.num_positions}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, num_classes]`` for ids ``[B, M]`` or codes ``[B, M, D]`` (with a
        question appended when the probe has one)."""
        x, question = self._split_question(x)
        self._check(x)
        message = self.embed(x) + self.pos_embed[:, :x.shape[1]]
        # The query carries no position: it is the slot that answers; question slots carry their place.
        slots = [self.query.expand(x.shape[0], -1, -1)]
        if question is not None:
            slots.append(self.question_embed(question) + self.question_pos)
        h = torch.cat(slots, dim=1)
        for block in self.blocks:
            h = block(h, message)
        return self.head(self.norm(h).flatten(1))


def append_question(inputs: torch.Tensor, questions: torch.Tensor) -> torch.Tensor:
    """Append question ids ``[B, L]`` to messages: ids ``[B, M]`` -> ``[B, M + L]``; codes
    ``[B, M, D]`` -> ``[B, M + L, D]`` with each id in channel 0 of its extra position.

    One tensor per sample keeps :func:`train_probe` and :func:`evaluate_probe` unchanged: they
    only index rows. Build the probe with ``question_vocab`` and ``question_length=L``.
    """
    if questions.ndim != 2 or questions.shape[0] != inputs.shape[0]:
        raise ValueError(f"questions must be [B, L] for {inputs.shape[0]} inputs, got "
                         f"{tuple(questions.shape)}")
    if inputs.ndim == 2:
        return torch.cat([inputs, questions.to(inputs.dtype)], dim=1)
    extra = inputs.new_zeros(inputs.shape[0], questions.shape[1], inputs.shape[2])
    extra[..., 0] = questions.to(inputs.dtype)
    return torch.cat([inputs, extra], dim=1)


@dataclass
class ProbeResult:
    """Validation accuracy of the best epoch and the probe restored to it.

    ``best_epoch`` is 1-based; ``history`` holds one dict per epoch run
    (``epoch, train_loss, val_top1, val_top5, lr``); ``top5`` is top-``min(5, num_classes)``.
    """

    top1: float
    top5: float
    best_epoch: int
    history: list[dict[str, float]] = field(repr=False)
    model: AttentionProbe = field(repr=False)


def split_indices(n: int, val_fraction: float, seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random disjoint (train, val) index tensors over ``range(n)``; at least one of each."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 samples to split, got {n}")
    num_val = min(max(1, round(n * val_fraction)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[num_val:], order[:num_val]


@torch.no_grad()
def evaluate_probe(model: AttentionProbe, inputs: torch.Tensor, labels: torch.Tensor,
                   batch_size: int = 1024) -> dict[str, float]:
    """Top-1 and top-k (k = min(5, num_classes)) accuracy of ``model`` on ``inputs``."""
    if len(inputs) != len(labels) or len(labels) == 0:
        raise ValueError(f"need as many labels as inputs (> 0), got {len(inputs)} inputs and "
                         f"{len(labels)} labels")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    k = min(5, model.num_classes)
    hits1 = hitsk = 0
    for start in range(0, len(inputs), batch_size):
        x = inputs[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        top = model(x).topk(k, dim=1).indices
        hits1 += int((top[:, 0] == y).sum())
        hitsk += int((top == y[:, None]).any(1).sum())
    model.train(was_training)
    return {"top1": hits1 / len(labels), "top5": hitsk / len(labels)}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay weight matrices only: biases, norms, positions and the query are exempt."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        exempt = param.ndim < 2 or name in ("pos_embed", "query", "question_pos")
        (no_decay if exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _check_data(inputs: torch.Tensor, labels: torch.Tensor, num_classes: int, name: str) -> None:
    if len(inputs) != len(labels) or len(labels) == 0:
        raise ValueError(f"{name}: need as many labels as inputs (> 0), got {len(inputs)} and "
                         f"{len(labels)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")


def _train_epoch(model: AttentionProbe, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, inputs: torch.Tensor,
                 labels: torch.Tensor, batch_size: int, generator: torch.Generator,
                 device: torch.device) -> float:
    """One pass over the shuffled training set; returns the mean training loss."""
    model.train()
    order = torch.randperm(len(labels), generator=generator)
    total = 0.0
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        x, y = inputs[index].to(device), labels[index].to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(index)
    return total / len(order)


def _cuda_devices(device: torch.device) -> list[int]:
    """The CUDA device whose RNG ``fork_rng`` must save and restore (none on CPU)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps: int
               ) -> torch.optim.lr_scheduler.LRScheduler:
    """Per step: one cycle (a warm-up over the first 5 %, then cosine decay to ~0), cosine decay to 0
    over the full run, or a constant lr."""
    if schedule == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=steps, pct_start=0.05)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f'schedule must be "one_cycle", "cosine" or "constant", got {schedule!r}')


def train_probe(train_inputs: torch.Tensor, train_labels: torch.Tensor,
                val_inputs: torch.Tensor, val_labels: torch.Tensor, num_classes: int,
                input: InputKind = "ids", vocab_size: int = 64000, epochs: int = 30,
                batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.05,
                patience: int = 5, seed: int = 0, device: str | torch.device = "cpu",
                progress: bool = True, schedule: Literal["one_cycle", "cosine", "constant"] = "one_cycle",
                log: Callable[[str], None] | None = None, min_epochs: int | None = None,
                **probe_kwargs) -> ProbeResult:
    """Train an ``AttentionProbe`` on frozen messages, early-stopping on validation top-1.

    AdamW with a per-step schedule over ``epochs`` (``_scheduler``); training stops once
    validation top-1 has not improved for ``patience`` epochs, but never before ``min_epochs``
    (None: half of ``epochs``) — a probe often sits at chance for several epochs before it finds
    where the answer is, then climbs — and the weights of the best epoch are restored. ``log``
    gets one line per epoch. Everything random (init, shuffling, dropout) derives from ``seed``
    without touching the global RNG state, so CPU runs are bit-for-bit repeatable.
    ``probe_kwargs`` go to ``AttentionProbe`` (dim, heads, depth, dropout, ...); for
    ``input="codes"`` the code dimension is read from the data.
    """
    _check_data(train_inputs, train_labels, num_classes, "train")
    _check_data(val_inputs, val_labels, num_classes, "val")
    if epochs < 1 or patience < 1:
        raise ValueError(f"epochs and patience must be >= 1, got {epochs} and {patience}")
    min_epochs = epochs // 2 if min_epochs is None else min_epochs
    device = torch.device(device)
    probe_kwargs.setdefault("num_positions", train_inputs.shape[1])
    if input == "codes":
        probe_kwargs.setdefault("code_dim", train_inputs.shape[-1])
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(seed)
        model = AttentionProbe(num_classes, input=input, vocab_size=vocab_size,
                               **probe_kwargs).to(device)
        optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
        steps = epochs * math.ceil(len(train_labels) / batch_size)
        scheduler = _scheduler(optimizer, schedule, steps)
        generator = torch.Generator().manual_seed(seed)
        history: list[dict[str, float]] = []
        best_state, best_epoch, best_top1 = None, 0, -1.0
        bar = progress_bar(range(1, epochs + 1), desc="probe", unit="epoch", enabled=progress)
        for epoch in bar:
            lr_now = optimizer.param_groups[0]["lr"]
            loss = _train_epoch(model, optimizer, scheduler, train_inputs, train_labels,
                                batch_size, generator, device)
            scores = evaluate_probe(model, val_inputs, val_labels)
            history.append({"epoch": epoch, "train_loss": loss, "val_top1": scores["top1"],
                            "val_top5": scores["top5"], "lr": lr_now})
            bar.set_postfix(loss=f"{loss:.3f}", top1=f"{scores['top1']:.3f}")
            if log is not None:
                log(f"epoch {epoch}/{epochs} loss {loss:.3f} val top-1 {scores['top1']:.3f}")
            if scores["top1"] > best_top1:
                best_top1, best_epoch = scores["top1"], epoch
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= patience and epoch >= min_epochs:
                break
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    best = history[best_epoch - 1]
    return ProbeResult(top1=best["val_top1"], top5=best["val_top5"], best_epoch=best_epoch,
                       history=history, model=model)
