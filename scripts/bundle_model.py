#!/usr/bin/env python
"""Copy a finished training run's EMA model into the package as the bundled default model.

    .venv/bin/python scripts/bundle_model.py runs/shapes-small --command "comit train shapes-small ..."
    .venv/bin/python scripts/bundle_model.py runs/bundled/global runs/bundled/fill --command "..."

Several run folders are the steps of one recipe, in order (each started from the one before): the
model is the last one's, the steps and images seen are summed over all. Writes
``src/comit/assets/comit-shapes/`` (config.json, model.safetensors in float16 to keep the package
small, the model card README.md) and ``provenance.json``: the training command, steps, images
seen, wall time, machine, date and the last logged losses, so the README can say how the model was
made.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from comit import COMiT
from comit.devices import cpu_model
from comit.io import atomic_write
from comit.model.checkpoints import BUNDLED_DIR
from comit.model.model_card import MODEL_CARD_NAME


SHAPES_DATA = "the built-in shapes (comit.data.shapes: 64-px scenes of coloured polygons)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+",
                        help="training run folders (each holds model/ and metrics.jsonl), in the order they trained")
    parser.add_argument("--command", required=True, help="the command that trained it, for the record")
    parser.add_argument("--minutes", type=float, required=True, help="wall time of the training, from its progress bar")
    parser.add_argument("--machine", help="where it trained, when not on this machine (e.g. 'one NVIDIA H200, torch 2.11')")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR)
    args = parser.parse_args()

    final = args.runs[-1]
    model = COMiT.from_pretrained(final / "model")
    # The last logged step of each run; a run stopped at a checkpoint may differ.
    lasts = [last_record(run) for run in args.runs]
    last = lasts[-1]
    provenance = {
        "command": args.command,
        "steps": sum(record["step"] for record in lasts),
        "images_seen": sum(record["step"] * model_batch(run) for record, run in zip(lasts, args.runs)),
        "data": training_data(final),
        "wall_time_minutes": args.minutes,
        "machine": args.machine or f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}",  # sharing: say so in --command
        "date": time.strftime("%Y-%m-%d", time.gmtime((final / "model" / "model.safetensors").stat().st_mtime)),
        "last_logged": {key: round(value, 4) if isinstance(value, float) else value for key, value in last.items()},
        "weights": "EMA, stored as float16",
    }
    (args.out / MODEL_CARD_NAME).unlink(missing_ok=True)  # the card describes the new model
    model.save_pretrained(args.out, dtype=torch.float16, model_card_kwargs={"provenance": provenance})
    atomic_write(args.out / "provenance.json", lambda tmp: Path(tmp).write_text(json.dumps(provenance, indent=2) + "\n"))
    print(json.dumps(provenance, indent=2))


def last_record(run: Path) -> dict:
    lines = [line for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])


def model_batch(run: Path) -> int:
    from comit.train.config import load_config

    return load_config(run / "config.yaml").optim.batch_size


def training_data(run: Path) -> str:
    """What the run learnt from, in words for the built-in shapes (the model card and the fit warning say it)."""
    from comit.train.config import load_config

    dataset = load_config(run / "config.yaml").data.dataset
    return SHAPES_DATA if dataset.split(":")[0] == "shapes" else dataset


if __name__ == "__main__":
    main()
