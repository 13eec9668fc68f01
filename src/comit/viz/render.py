"""Write one run of ``comit viz`` / ``comit demo`` to a folder: PNGs per image and the HTML report.

Layout of the output folder::

    index.html                      the report (self-contained: every picture embedded)
    <image>/crop_path.png           crops as numbered boxes, offsets as arrows
    <image>/one_step.png            one-step reconstruction after each crop, then the full one
    <image>/reconstruction.png      the full reconstruction alone
    <image>/attention_top.png       heat maps of the most focused message tokens
    <image>/attention/token_<p>.png each of those tokens' map over the image
    <image>/token_ids.png           the message's token ids
    <image>/trace.json              the numbers behind the pictures

Everything is written to a temporary folder inside the target and moved in at the end, the report
last, so a run that fails leaves the folder as it was and a report always describes whole output.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from . import figures
from .report import Figure, ImageEntry, write_report
from .trace import Trace, top_tokens

REPORT_NAME = "index.html"


def write_run(folder: str | os.PathLike, traces: list[Trace], sources: list[str], run_info: dict,
              labels: list[str] | None = None) -> Path:
    """Write the figures of every trace and the report; returns the report's path.

    ``sources`` (the image files) name the folders; ``labels`` (default: the sources) is how the
    report and trace.json describe each image.
    """
    labels = labels or sources
    if not len(traces) == len(sources) == len(labels):
        raise ValueError(f"got {len(traces)} traces for {len(sources)} images ({len(labels)} labels)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".comit-viz-", dir=folder))
    try:
        entries = [write_image_figures(staging, name, label, trace)
                   for name, label, trace in zip(unique_names(sources), labels, traces)]
        write_report(staging / REPORT_NAME, entries, run_info, staging)
        for entry in entries:
            move_into(staging / entry.name, folder / entry.name)
        os.replace(staging / REPORT_NAME, folder / REPORT_NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / REPORT_NAME


def write_image_figures(root: Path, name: str, source: str, trace: Trace) -> ImageEntry:
    entry = ImageEntry(name=name, source=source, trace=trace)
    focused = top_tokens(trace.attention, trace.settings.top_tokens)
    size = trace.image.shape[-1]

    def save(relative: str, picture: Image.Image, caption: str) -> Figure:
        path = root / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path, format="PNG")
        return Figure(path=f"{name}/{relative}", caption=caption)

    entry.figures["crop_path"] = save("crop_path.png", figures.crop_path(trace), CAPTIONS["crop_path"])
    entry.figures["reconstruction"] = save(
        "reconstruction.png", figures.upscale(trace.reconstruction, figures.display_scale(size)),
        f"Reconstruction from the final message ({trace.settings.steps} steps, guidance "
        f"{trace.settings.cfg:g}), {figures.format_psnr(trace.reconstruction_psnr())}.")
    entry.figures["one_step"] = save("one_step.png", figures.one_step_strip(trace), CAPTIONS["one_step"])
    entry.figures["attention_top"] = save("attention_top.png", figures.attention_grid(trace, focused),
                                          CAPTIONS["attention_top"])
    for position in focused:
        entry.overlays.append((position, save(
            f"attention/token_{position}.png", figures.attention_overlay(trace.image, trace.attention[position]),
            f"token #{position} (id {int(trace.ids[position])})")))
    entry.figures["token_ids"] = save("token_ids.png", figures.token_grid(trace, focused), CAPTIONS["token_ids"])
    entry.summary = trace_summary(trace, source, focused)
    (root / name / "trace.json").write_text(json.dumps(entry.summary, indent=2) + "\n")
    return entry


def trace_summary(trace: Trace, source: str, focused: list[int]) -> dict:
    return {
        "source": source,
        "settings": trace.settings.describe(),
        "crops": [{"step": step + 1, "index": index, "top": box.top, "left": box.left, "size": box.size}
                  for step, (index, box) in enumerate(zip(trace.crop_indices, trace.boxes))],
        "one_step_psnr_db": [round(value, 3) for value in trace.one_step_psnr()],
        "reconstruction_psnr_db": round(trace.reconstruction_psnr(), 3),
        "top_tokens": focused,
        "token_ids": [int(i) for i in trace.ids],
    }


CAPTIONS = {
    "crop_path": "Crops observed, numbered in order (the global crop's tag sits top-right). Solid arrows: the "
                 "offset each message update received (from the previous crop's centre to this one's); dashed: "
                 "the decoding offset (from the last crop to the image centre).",
    "one_step": "What the message knows after each crop: a one-step reconstruction (1 Euler step, guidance 1, the "
                "same noise every time) is sharp where the message has looked and blurry elsewhere. The newest "
                "crop is outlined thick, earlier ones thin. Last: the full reconstruction.",
    "attention_top": "Where the most focused message tokens look: each token's attention over the image patches "
                     "while the decoder paints (averaged over t = 0.25, 0.5, 0.75; last block; mean over heads), "
                     "each map scaled to its own maximum (yellow). Spread = exp(entropy) of the map, in patches.",
    "token_ids": "The message: one cell per position (row by row), its token id; equal ids share a colour, grey "
                 "cells still hold the empty message's id. Framed: the tokens shown above.",
}


def unique_names(sources: list[str]) -> list[str]:
    """Folder names from the file stems; a repeated stem gets its index appended."""
    names, seen = [], set()
    for index, source in enumerate(sources):
        name = safe_name(Path(source).stem) or f"image-{index}"
        if name in seen or name == REPORT_NAME:
            name = f"{name}-{index}"
        seen.add(name)
        names.append(name)
    return names


def safe_name(stem: str) -> str:
    """Keep names portable and URL-safe (the report links to them)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip(".")


def move_into(source: Path, target: Path) -> None:
    """Replace ``target`` (a folder from an earlier run, if any) by ``source``."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)
