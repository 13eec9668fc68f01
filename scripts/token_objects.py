#!/usr/bin/env python
"""Tokens over objects: for the same val images, the token of each arm's model that best covers the
objects, drawn over the image (the paper's attention-map figure, local crops vs global crop only).

    .venv/bin/python scripts/token_objects.py runs/structure --arms L G --seed 0 -o FIGURE.png

An experiment draws this figure by itself from the maps each unit stored when it was evaluated
(``evals/<arm>/seed-<s>/tokens``, no model needed); this script draws it from the models of an
experiment folder that has them (also one evaluated before units stored their maps).
Rows: val images. Columns: the image with its objects outlined, then for each arm the attention map
of its best token (``eval align``'s protocol at Q = 30 %: the decoder's attention over the patches
while it reads the message; all objects of the image as one mask), captioned with the token's
position and its IoU. The message is written under the experiment's first policy (``global``: the
global crop alone, what every arm reads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from comit import COMiT
from comit.data import build_dataset
from comit.eval.protocol import EvalSettings
from comit.eval.run_align import best_token_examples, tokens_over_objects
from comit.experiments.config import load_experiment
from comit.experiments.runner import EXPERIMENT_FILE, MODEL_DIR, Unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path, help="an experiment folder (experiment.yaml, runs/)")
    parser.add_argument("--arms", nargs="+", default=["L", "G"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-n", "--num-images", type=int, default=6)
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()

    torch.set_flush_denormal(True)
    config = load_experiment(args.experiment / EXPERIMENT_FILE)
    policy = next(iter(config.eval.policies.values()))
    settings = EvalSettings(order=policy.order, num_crops=policy.num_crops, global_crop=policy.global_crop,
                            steps=config.eval.steps, cfg=config.eval.cfg, seed=args.seed, progress=False)
    models = {arm: COMiT.from_pretrained(Unit(arm, args.seed).run_dir(args.experiment) / MODEL_DIR).eval()
              for arm in args.arms}
    data = build_dataset(config.eval.data, next(iter(models.values())).config.image_size, split="val")
    columns = {f"arm {arm}, seed {args.seed}": best_token_examples(model, data, settings, args.num_images)
               for arm, model in models.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tokens_over_objects(data, columns).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
