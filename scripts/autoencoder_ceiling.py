#!/usr/bin/env python
"""How well a model's autoencoder alone gives back held-out images: the ceiling of every
reconstruction the model paints in its latents (the tokenizer cannot beat its own decoder).

    .venv/bin/python scripts/autoencoder_ceiling.py MODEL --data DATA [-n 200]

Prints one line: the mean PSNR (dB) of decode(encode(x)) over the first N val images of DATA.
"""

from __future__ import annotations

import argparse

import torch

from comit import COMiT
from comit.data import build_dataset
from comit.metrics.reconstruction import mean_psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", default="shapes")
    parser.add_argument("-n", "--num-images", type=int, default=200)
    args = parser.parse_args()
    model = COMiT.from_pretrained(args.model).eval()
    data = build_dataset(args.data, model.config.image_size, split="val")
    images = torch.stack([data[i]["image"] for i in range(min(args.num_images, len(data)))])
    with torch.no_grad():
        rebuilt = model.vae.decode(model.vae.encode(images)).float()
    print(f"{model.config.autoencoder.kind} autoencoder alone on {len(images)} val images of {args.data}: "
          f"PSNR {mean_psnr(rebuilt, images):.2f} dB")


if __name__ == "__main__":
    main()
