#!/usr/bin/env python
"""Train the bundled shapes teacher (REPA/SREPA targets for the built-in shapes data) on CPU.

    .venv/bin/python scripts/train_shapes_teacher.py            # writes src/comit/assets/teacher-shapes

Deterministic for a given seed and thread count. Training images come from ShapesDataset with a
data seed of its own (1 to 4 objects, so the teacher also handles crowded variants); accuracies
are measured on the default shapes "val" split, which no training image comes from.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from comit.data import SHAPES, ShapesDataset, build_dataset
from comit.teachers.shapes_net import ShapesNet, ShapesNetConfig
from comit.teachers.shapes_targets import (TeacherAccuracy, cell_targets, pair_targets,
                                                 teacher_loss)
from comit.teachers.shapes_teacher import BUNDLED_TEACHER_DIR, ShapesTeacher


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BUNDLED_TEACHER_DIR)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and shuffling")
    parser.add_argument("--data-seed", type=int, default=7, help="ShapesDataset seed of the training images")
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--val-images", type=int, default=2000)
    parser.add_argument("--max-objects", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def encode(dataset, count: int, config: ShapesNetConfig) -> dict[str, Tensor]:
    """Render ``count`` items once: uint8 images (like real data) plus rasterised targets."""
    num_classes = {"shape": config.num_shapes, "color": config.num_colors, "size": config.num_sizes}
    chunks: dict[str, list[Tensor]] = {}
    for start in range(0, count, 500):
        items = [dataset[i] for i in range(start, min(start + 500, count))]
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        cells = cell_targets(batch, config.grid, num_classes)
        encoded = {
            "image": ((batch["image"] + 1.0) * 127.5).round().to(torch.uint8),
            "pairs": pair_targets(batch, config.num_colors, config.num_pairs),
            "label": batch["label"],
            **{f"cells_{name}": target.half() for name, target in cells.items()},
        }
        for key, value in encoded.items():
            chunks.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in chunks.items()}


def unpack(data: dict[str, Tensor], rows: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    images = data["image"][rows].float() / 127.5 - 1.0
    cells = {key[len("cells_"):]: value[rows].float()
             for key, value in data.items() if key.startswith("cells_")}
    return images, cells, data["pairs"][rows]


def learning_rate(step: int, total: int, peak: float) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to zero."""
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(net: ShapesNet, data: dict[str, Tensor], args: argparse.Namespace) -> None:
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    count = data["image"].shape[0]
    steps_per_epoch = count // args.batch_size
    total = steps_per_epoch * args.epochs
    step = 0
    for epoch in range(args.epochs):
        order = torch.randperm(count, generator=generator)
        running = 0.0
        for batch_start in range(0, steps_per_epoch * args.batch_size, args.batch_size):
            images, cells, pairs = unpack(data, order[batch_start:batch_start + args.batch_size])
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, args.lr)
            loss = teacher_loss(net(images), cells, pairs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item()
            step += 1
        print(f"epoch {epoch + 1}/{args.epochs}: loss {running / steps_per_epoch:.4f}", flush=True)


@torch.no_grad()
def evaluate(net: ShapesNet, data: dict[str, Tensor]) -> dict[str, float]:
    """Head accuracies, plus how well the global *features* alone separate the main shape."""
    accuracy = TeacherAccuracy()
    teacher = ShapesTeacher(net)
    globals_ = []
    for start in range(0, data["image"].shape[0], 256):
        rows = torch.arange(start, min(start + 256, data["image"].shape[0]))
        images, cells, pairs = unpack(data, rows)
        accuracy.update(net(images), cells, pairs)
        globals_.append(teacher(images).global_)
    results = accuracy.result()
    results["global_centroid_label"] = nearest_centroid_accuracy(torch.cat(globals_), data["label"])
    return results


def nearest_centroid_accuracy(features: Tensor, labels: Tensor) -> float:
    """Fit class centroids on the first half, classify the second half by cosine similarity."""
    features = torch.nn.functional.normalize(features, dim=1)
    half = features.shape[0] // 2
    centroids = torch.stack([features[:half][labels[:half] == c].mean(dim=0)
                             for c in range(len(SHAPES))])
    predicted = (features[half:] @ centroids.T).argmax(dim=1)
    return (predicted == labels[half:]).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = ShapesNetConfig()
    started = time.perf_counter()
    train_set = ShapesDataset(image_size=config.image_size, max_objects=args.max_objects,
                              num_images=args.train_images, seed=args.data_seed)
    val_set = build_dataset("shapes", config.image_size, split="val")
    train_data = encode(train_set, args.train_images, config)
    val_data = encode(val_set, args.val_images, config)
    print(f"rendered {args.train_images} + {args.val_images} images in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    net = ShapesNet(config)
    train(net, train_data, args)
    seconds = time.perf_counter() - started
    results = evaluate(net.eval(), val_data)
    for key, value in results.items():
        print(f"val {key}: {value:.4f}")
    parameters = sum(p.numel() for p in net.parameters())
    print(f"{parameters} parameters, {seconds:.0f} s in total")
    metadata = {
        "command": " ".join(["scripts/train_shapes_teacher.py", *(argv if argv is not None else sys.argv[1:])]),
        "arguments": {key: str(value) if isinstance(value, Path) else value
                      for key, value in vars(args).items() if key != "out"},
        "parameters": parameters, "train_seconds": round(seconds),
        "val_split": "shapes (default options), split=val",
        "val_accuracy": {key: round(value, 4) for key, value in results.items()},
        "architecture": dataclasses.asdict(config),
    }
    net.save_pretrained(args.out, metadata=metadata)
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
