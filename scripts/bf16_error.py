#!/usr/bin/env python
"""What opt-in bf16 autocast costs in quality and buys in speed, on a trained model and real images.

    .venv/bin/python scripts/bf16_error.py [--model bundled] [-n 64] [--threads 2] [--out FILE.json]

The same images, the same noise and crops, once in fp32 and once under ``autocast(device, "bf16")``
(comit.model.acceleration), for two policies (the global crop then all local crops; adaptive, 3
local crops): tokens that agree, the PSNR of each result against the image, the PSNR of the bf16
result against the fp32 one, and the time of tokenize and detokenize for each precision
(interleaved, best of ``--repeats``). The bf16 error is that of the whole pipeline, FSQ roundings
that flip included.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from comit import COMiT
from comit.io import atomic_write_json
from comit.data import build_dataset
from comit.devices import cpu_model, torch_threads
from comit.model.acceleration import autocast

POLICIES = {"all crops": dict(order="raster_scan", global_crop=True, num_crops=10),
            "adaptive 3": dict(order="adaptive", global_crop=False, num_crops=3)}


@dataclass
class Row:
    policy: str
    tokens_equal: float          # share of token ids equal to fp32's
    psnr_fp32: float             # fp32 result against the image
    psnr_bf16: float             # bf16 result against the image
    psnr_bf16_vs_fp32: float     # bf16 result against the fp32 result
    tokenize_s_fp32: float
    tokenize_s_bf16: float
    detokenize_s_fp32: float
    detokenize_s_bf16: float


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the PSNR of [-1, 1] images mapped to [0, 1]."""
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return float((-10 * torch.log10(mse)).mean())


def run_once(model: COMiT, images: torch.Tensor, precision: str, policy: dict, steps: int):
    noise = torch.randn(model.latent_shape(images.shape[0]), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), autocast(model.device, precision):
        started = time.perf_counter()
        tokens = model.tokenize(images, **policy, generator=torch.Generator().manual_seed(0))
        tokenized = time.perf_counter()
        pictures = model.detokenize(tokens.messages, tokens.offsets, num_steps=steps, cfg_weight=1.0, noise=noise)
        done = time.perf_counter()
    return tokens.ids, pictures.float(), tokenized - started, done - tokenized


def measure(model: COMiT, images: torch.Tensor, name: str, policy: dict, steps: int, repeats: int) -> Row:
    times = {precision: ([], []) for precision in ("fp32", "bf16")}
    results = {}
    for _ in range(repeats):
        for precision in ("fp32", "bf16"):  # interleaved, so load changes hit both alike
            ids, pictures, tokenize_s, detokenize_s = run_once(model, images, precision, policy, steps)
            results[precision] = (ids, pictures)
            times[precision][0].append(tokenize_s)
            times[precision][1].append(detokenize_s)
    (ids32, rec32), (ids16, rec16) = results["fp32"], results["bf16"]
    return Row(name, float((ids32 == ids16).float().mean()), psnr(rec32, images), psnr(rec16, images),
               psnr(rec16, rec32), min(times["fp32"][0]), min(times["bf16"][0]), min(times["fp32"][1]),
               min(times["bf16"][1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("-n", "--num-images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    model = COMiT.from_pretrained(args.model).eval()
    size = model.config.image_size
    dataset = build_dataset("shapes", size, split="val")
    images = torch.stack([dataset[i]["image"] for i in range(args.num_images)])
    with torch_threads(args.threads):
        rows = [measure(model, images, name, policy, args.steps, args.repeats) for name, policy in POLICIES.items()]
        threads = torch.get_num_threads()
    print(f"{args.model}, {args.num_images} shapes val images, {args.steps} Euler steps, guidance 1; "
          f"{cpu_model()}, {threads} threads, torch {torch.__version__}")
    print("| policy | tokens equal | PSNR fp32 | PSNR bf16 | bf16 vs fp32 | tokenize fp32 → bf16 | detokenize fp32 → bf16 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.policy} | {r.tokens_equal:.1%} | {r.psnr_fp32:.2f} | {r.psnr_bf16:.2f} | {r.psnr_bf16_vs_fp32:.1f} "
              f"| {r.tokenize_s_fp32:.2f} → {r.tokenize_s_bf16:.2f} s ({r.tokenize_s_fp32 / r.tokenize_s_bf16:.2f}x) "
              f"| {r.detokenize_s_fp32:.2f} → {r.detokenize_s_bf16:.2f} s "
              f"({r.detokenize_s_fp32 / r.detokenize_s_bf16:.2f}x) |")
    if args.out is not None:
        record = {"model": args.model, "num_images": args.num_images, "steps": args.steps, "cpu": cpu_model(),
                  "threads": threads, "torch": torch.__version__, "machine": platform.machine(),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": [asdict(r) for r in rows]}
        atomic_write_json(args.out, record)


if __name__ == "__main__":
    main()
