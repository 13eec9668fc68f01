"""What a run writes as it goes: ``metrics.jsonl`` always; TensorBoard and Weights & Biases when asked.

``metrics.jsonl`` is the record (one JSON line per logged step; a resumed run first drops the lines
past its checkpoint, so the file reads as one uninterrupted run). The boards are views of it plus
pictures: the sample grids (``loop.sample_every``) and the held-out curve (``loop.eval_every``).
Each board is an optional dependency, imported only when its switch is on.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..io import atomic_write
from .config import ConfigError, TrainConfig

METRICS_FILE = "metrics.jsonl"
VAL_FILE = "val.jsonl"
WANDB_ID_FILE = "wandb-id"  # a resumed run continues the same W&B run


def append_line(path: Path, step: int, record: dict) -> None:
    """Add one JSON line, dropping lines of this step or later (left by a run that was resumed)."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) < step]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in [*kept, json.dumps(record)])))


def last_line(path: Path) -> dict:
    """The last JSON line of a run's log (``{}`` when there is none yet)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def logged_train_seconds(path: Path, batch_size: int) -> float | None:
    """How long a run trained, from its ``metrics.jsonl``: wall seconds in the training loop up to
    its last logged line, summed over every process that trained it (setup not counted; None
    without a log).

    Each line's window is what its ``train_s`` adds to the line before (a resumed process counts on
    from its checkpoint's time, or from 0 if the checkpoint predates ``train_s``, when the line's
    ``train_s`` is the window itself); lines written before ``train_s`` existed give steps x
    ``batch_size`` / images per second (a resume's first window then counts from the line before
    it: an over-count of under one window)."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if not lines:
        return None
    total, step, seconds = 0.0, 0, None
    for line in lines:
        if "train_s" in line:
            carried = seconds is not None and line["train_s"] >= seconds
            total += line["train_s"] - seconds if carried else line["train_s"]
        elif line.get("images_per_s"):
            total += (line["step"] - step) * batch_size / line["images_per_s"]
        step, seconds = line["step"], line.get("train_s")
    return round(total, 1)


class RunLog:
    def __init__(self, out: Path, start_step: int, config: TrainConfig):
        self.path = out / METRICS_FILE
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start_step]
            atomic_write(self.path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))
        self.handle = self.path.open("a")
        self.board = open_tensorboard(out, start_step) if config.loop.tensorboard else None
        self.wandb = open_wandb(out, config) if config.loop.wandb_project else None

    def write(self, record: dict) -> None:
        """One logged step: a line of metrics.jsonl, and its scalars on the boards."""
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        self.write_scalars("train", record, record["step"])

    def write_scalars(self, group: str, values: dict, step: int) -> None:
        scalars = {f"{group}/{key}": value for key, value in values.items()
                   if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
        if self.board:
            for key, value in scalars.items():
                self.board.add_scalar(key, value, step)
        if self.wandb:
            self.wandb.log(scalars, step=step)

    def write_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """``image``: [3, H, W] in [-1, 1] (a sample grid)."""
        pixels = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2)
        if self.board:
            self.board.add_image(tag, pixels, step)
        if self.wandb:
            import wandb

            self.wandb.log({tag: wandb.Image(pixels.permute(1, 2, 0).numpy())}, step=step)

    def close(self) -> None:
        self.handle.close()
        if self.board:
            self.board.close()
        if self.wandb:
            self.wandb.finish()


def open_tensorboard(out: Path, start_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ConfigError("loop.tensorboard=true needs tensorboard: pip install 'comit[tensorboard]'") from error
    return SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)


def open_wandb(out: Path, config: TrainConfig):
    """A W&B run for this run folder; a resumed run (same folder) continues the same W&B run."""
    try:
        import wandb
    except ImportError as error:
        raise ConfigError("loop.wandb_project needs Weights & Biases: pip install 'comit[wandb]'") from error
    id_file = out / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else wandb.util.generate_id()
    if not id_file.exists():
        atomic_write(id_file, lambda tmp: Path(tmp).write_text(run_id + "\n"))
    return wandb.init(project=config.loop.wandb_project, name=config.name, id=run_id, resume="allow", dir=str(out),
                      config=config.model_dump(mode="json"))
