#!/usr/bin/env python
"""Would a local write that replaces only the tokens at its place keep what the global crop said?

    .venv/bin/python scripts/masked_write_probe.py MODEL        (about a minute on 2 CPU cores)

Inference only, on a model trained with the paper's write (every token rewritten by every crop):
64 shapes val images, the global crop then the 9 local crops in raster order, one-step and
10-step PSNR (guidance 1, fixed noise). "replace" is the paper's write; "masked" keeps the previous
value of every token whose patch centre lies outside the crop (message positions on the patch
grid); "masked+1" widens the crop by one patch.
"""

import sys
from dataclasses import replace

import torch

from comit import COMiT
from comit.data import build_dataset
from comit.metrics.reconstruction import mean_psnr


def main() -> None:
    model = COMiT.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else "bundled").eval()
    if model.config.message_write != "replace":
        sys.exit("this probe emulates local writes on a model with the paper's write (message_write: replace); "
                 "the bundled model since 2026-12-05 writes locally: give a stage-3 model")
    n = 64
    data = build_dataset("shapes", model.config.image_size, split="val")
    images = torch.stack([data[i]["image"] for i in range(n)])
    side = int(model.config.num_msg_tokens ** 0.5)
    patch_px = model.config.image_size / side
    centres = (torch.arange(side) + 0.5) * patch_px
    cy, cx = (grid.flatten() for grid in torch.meshgrid(centres, centres, indexing="ij"))
    noise = torch.randn(model.latent_shape(n), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for mode, grow in (("replace", None), ("masked", 0.0), ("masked+1", patch_px)):
            tokens = None
            for step in range(model.crops.num_indices(True)):
                new = model.tokenize(images, global_crop=True, order=[step], num_crops=1, resume=tokens,
                                     generator=torch.Generator().manual_seed(2))
                if grow is not None and step > 0:
                    box = model.crops.box(step, True)
                    inside = ((cy >= box.top - grow) & (cy < box.top + box.size + grow) &
                              (cx >= box.left - grow) & (cx < box.left + box.size + grow))
                    kept = torch.where(inside[None, :, None], new.messages, tokens.messages)
                    new = replace(new, messages=kept, ids=model.quantizer.codes_to_indices(kept))
                tokens = new
                if step == 0:
                    alone = model.detokenize(tokens.messages, tokens.offsets, num_steps=10, cfg_weight=1.0, noise=noise)
            one = model.detokenize(tokens.messages, tokens.offsets, num_steps=1, cfg_weight=1.0, noise=noise)
            full = model.detokenize(tokens.messages, tokens.offsets, num_steps=10, cfg_weight=1.0, noise=noise)
            print(f"{mode}: global crop alone 10-step {mean_psnr(alone, images):.2f} dB; after all crops "
                  f"one-step {mean_psnr(one, images):.2f}, 10-step {mean_psnr(full, images):.2f}", flush=True)


if __name__ == "__main__":
    main()
