"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a directory ``checkpoints/step-000500/`` holding

* ``training.safetensors`` — the trained weights (``model.*``: predictor and projectors), the EMA
  weights (``ema.*``) and the optimiser's tensors (``optim.<param>.<name>``);
* ``state.json`` — step, optimiser hyper-parameters, data position and the run's config.

The learning rate is a function of the step and the random state is re-derived from (seed,
step, rank) at every step (see ``loop.py``), so the step number restores both. The directory is
written under a temporary name and renamed when complete, so a run killed mid-write (even by
SIGKILL) leaves the previous checkpoint as the latest complete one; stray temporary directories
are ignored and cleaned up.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..io import publish

WEIGHTS = "training.safetensors"
STATE = "state.json"
PREFIX = "step-"


class ResumeError(ValueError):
    """A run that cannot be continued, with a one-line reason."""


@dataclass
class TrainingState:
    """What a checkpoint restores."""

    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict
    extra: dict


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:09d}"


def save_checkpoint(folder: Path, step: int, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
                    optimizer: dict, extra: dict, keep_last: int) -> Path:
    """Write ``folder/step-XXXXXXXXX`` atomically, then delete all but the newest ``keep_last``."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.items()}
    tensors.update({f"ema.{k}": v for k, v in ema.items()})
    optim_tensors, optim_meta = split_optimizer_state(optimizer)
    tensors.update({f"optim.{k}": v for k, v in optim_tensors.items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    target = folder / checkpoint_name(step)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder))
    try:
        save_file(tensors, staging / WEIGHTS)
        state = {"step": step, "optimizer": optim_meta, **extra}
        (staging / STATE).write_text(json.dumps(state, indent=1) + "\n")
        if target.exists():  # a checkpoint of the same step from an earlier attempt
            shutil.rmtree(target)
        publish(staging, target)  # files flushed, then one rename: a torn checkpoint cannot exist
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prune(folder, keep_last)
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint directory, or None."""
    complete = [path for path in folder.glob(f"{PREFIX}*") if path.is_dir() and (path / STATE).is_file()
                and (path / WEIGHTS).is_file()]
    return max(complete, key=lambda path: path.name, default=None)


def load_checkpoint(path: Path) -> TrainingState:
    try:
        tensors = load_file(str(path / WEIGHTS))
        state = json.loads((path / STATE).read_text())
    except (SafetensorError, OSError, json.JSONDecodeError) as error:
        raise ResumeError(f"checkpoint {path} is damaged ({str(error).splitlines()[0]}); delete it to resume "
                          "from the one before") from error
    groups = {"model": {}, "ema": {}, "optim": {}}
    for key, value in tensors.items():
        group, _, name = key.partition(".")
        groups[group][name] = value
    optimizer = join_optimizer_state(groups["optim"], state.pop("optimizer"))
    return TrainingState(step=int(state.pop("step")), model=groups["model"], ema=groups["ema"],
                         optimizer=optimizer, extra=state)


def prune(folder: Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` complete checkpoints; remove older ones and stale temporaries."""
    complete = sorted(path for path in folder.glob(f"{PREFIX}*") if path.is_dir())
    for path in complete[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    for stale in folder.glob(f".{PREFIX}*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def split_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state -> (tensors keyed ``<param>.<name>``, JSON-able rest)."""
    tensors, scalars = {}, {}
    for param, entries in state_dict["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{param}.{name}"] = value
            else:
                scalars[f"{param}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *meta.get("scalars", {}).items()]:
        param, _, name = key.partition(".")
        state.setdefault(int(param), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}
