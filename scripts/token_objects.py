#!/usr/bin/env python
"""Tokens over objects: for the same val images, the token of each arm's model that best covers the
objects, drawn over the image (the paper's attention-map figure, local crops vs global crop only).

    .venv/bin/python scripts/token_objects.py runs/structure --arms L G --seed 0 -o FIGURE.png

Rows: val images. Columns: the image with its object outline, then for each arm the attention map
of its best token (``eval align``'s protocol: the decoder's attention over the patches while it
reads the message, the same layer, flow times and noise; all objects of the image as one mask;
top 30 % of pixels kept), captioned with the token's position and its IoU. The message is written
under the experiment's ``global`` policy (the global crop alone, what every arm reads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from comit import COMiT
from comit.data import build_dataset
from comit.eval.alignment import best_token_iou
from comit.eval.common import EvalSettings
from comit.eval.run_align import AlignSettings, attention_batch
from comit.experiments.config import load_experiment
from comit.experiments.runner import EXPERIMENT_FILE, MODEL_DIR, Unit
from comit.viz.figures import Panel, attention_overlay, display_scale, panel_grid, upscale

Q = 30.0  # the middle of eval align's Q list


def outlined(image: torch.Tensor, mask: torch.Tensor, scale: int) -> Image.Image:
    """The image with the union of its objects' outlines in white (so where the objects are is plain)."""
    picture = np.asarray(upscale(image, scale)).copy()
    big = mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    inner = F.max_pool2d((~big)[None, None].float(), 3, 1, 1)[0, 0] > 0
    picture[(big & inner).numpy()] = 255
    return Image.fromarray(picture)


def best_token_panel(model: COMiT, item: dict, index: int, settings: EvalSettings, label: str, scale: int) -> Panel:
    # index: the image's place in the val set, which fixes its noise as in eval align
    batch = {"image": item["image"][None], "position": torch.tensor([index])}
    maps = attention_batch(model, batch, settings, AlignSettings())[0]
    foreground = item["masks"][item["valid"]].any(0)
    maps = F.interpolate(maps[None].float(), size=tuple(foreground.shape), mode="bilinear", align_corners=False)[0]
    iou, _, chosen = best_token_iou(maps, foreground, (Q,))
    token = int(chosen[0])
    return Panel(attention_overlay(item["image"], maps[token], scale), [label, f"token #{token}, IoU {iou:.2f}"])


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
    policy = config.eval.policies["global"]
    settings = EvalSettings(order=policy.order, num_crops=policy.num_crops, global_crop=policy.global_crop,
                            steps=config.eval.steps, cfg=config.eval.cfg, seed=args.seed, progress=False)
    models = {arm: COMiT.from_pretrained(Unit(arm, args.seed).run_dir(args.experiment) / MODEL_DIR).eval()
              for arm in args.arms}
    size = next(iter(models.values())).config.image_size
    data = build_dataset(config.eval.data, size, split="val")
    scale = display_scale(size, 128)
    panels = []
    with torch.no_grad():
        for index in range(args.num_images):
            item = data[index]
            foreground = item["masks"][item["valid"]].any(0)
            panels.append(Panel(outlined(item["image"], foreground, scale), ["val image", f"#{index}"]))
            panels += [best_token_panel(model, item, index, settings, f"arm {arm}, seed {args.seed}", scale)
                       for arm, model in models.items()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    panel_grid(panels, columns=1 + len(models)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
