"""The HTML report of a ``comit viz`` run: one self-contained page.

Every picture is embedded as a base64 ``data:`` URI rather than linked. The page then works
wherever it goes — opened from a CI artefact, mailed, moved out of its folder — and cannot have a
broken link; the PNGs beside it remain for reuse elsewhere. The cost is a third more bytes than the
PNGs, which is small here: the figures are upscaled with nearest-neighbour and compress well. The
page needs no script and no network (no fonts, styles or libraries from elsewhere).
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from dataclasses import dataclass, field

from PIL import Image

from .trace import Trace


@dataclass
class Figure:
    """One PNG of an image's section: its path relative to the output folder and its caption."""

    path: str
    caption: str


@dataclass
class ImageEntry:
    """What the report shows for one image."""

    name: str
    source: str
    trace: Trace
    figures: dict[str, Figure] = field(default_factory=dict)
    overlays: list[tuple[int, Figure]] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1a1a1a; background: #fff; line-height: 1.4; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
ul.info { display: flex; flex-wrap: wrap; gap: .3rem .5rem; list-style: none; padding: 0; margin: 1rem 0;
          font-size: .85rem; }
ul.info li { border: 1px solid #ddd; border-radius: 4px; padding: .1rem .5rem; }
ul.info b { font-weight: normal; color: #666; }
.row { display: flex; flex-wrap: wrap; gap: 1.2rem; align-items: flex-start; }
figure { margin: .8rem 0; display: table; }  /* a table's caption is as wide as its image */
figure img { display: block; max-width: 100%; height: auto; image-rendering: pixelated; border: 1px solid #eee; }
figcaption { display: table-caption; caption-side: bottom; font-size: .85rem; color: #444; padding-top: .3rem; }
.overlays figure { margin: 0; } .overlays figcaption { font-size: .8rem; }
.meta { color: #555; font-size: .9rem; }
nav a { margin-right: .8rem; }
"""


def write_report(path: Path, entries: list[ImageEntry], run_info: dict, root: Path) -> None:
    """Write the page to ``path``; figure paths in ``entries`` are relative to ``root``. (The
    caller writes into a staging folder and moves the page into place: no half-written page.)"""
    Path(path).write_text(render_page(entries, run_info, root), encoding="utf-8")


def render_page(entries: list[ImageEntry], run_info: dict, root: Path) -> str:
    title = run_info.get("title", "COMiT: what the message knows, crop by crop")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        info_table(run_info.get("info", {})),
        "<nav>" + "".join(f'<a href="#{escape(entry.name)}">{escape(entry.name)}</a>' for entry in entries) + "</nav>",
    ]
    parts.extend(image_section(entry, root) for entry in entries)
    parts.append("</body></html>")
    return "\n".join(parts)


def info_table(info: dict) -> str:
    if not info:
        return ""
    items = "".join(f"<li><b>{escape(key)}</b> {escape(value)}</li>" for key, value in info.items())
    return f'<ul class="info">{items}</ul>'


def image_section(entry: ImageEntry, root: Path) -> str:
    crops = ", ".join(f"#{index}" for index in entry.trace.crop_indices)
    psnr = entry.summary.get("reconstruction_psnr_db")
    overlays = "".join(figure(item, root, alt=f"attention of token {position}", shrink=2)
                       for position, item in entry.overlays)
    return "\n".join([
        f'<section id="{escape(entry.name)}">',
        f"<h2>{escape(entry.name)}</h2>",
        f'<p class="meta">{escape(entry.source)} · crops in order: {escape(crops)} · reconstruction PSNR '
        f"{escape(psnr)} dB · {entry.trace.num_tokens} tokens</p>",
        '<div class="row">', figure(entry.figures["crop_path"], root, alt="crop path"),
        figure(entry.figures["reconstruction"], root, alt="reconstruction"), "</div>",
        figure(entry.figures["one_step"], root, alt="one-step reconstructions after each crop"),
        figure(entry.figures["attention_top"], root, alt="attention maps of the top tokens"),
        "<p>Each of those tokens over the image:</p>",
        f'<div class="row overlays">{overlays}</div>',
        figure(entry.figures["token_ids"], root, alt="token ids"),
        "</section>",
    ])


def figure(item: Figure, root: Path, alt: str, shrink: int = 1) -> str:
    """An embedded picture with its caption; ``shrink`` shows it at 1/shrink of its size (the
    per-token overlays, so a row of them fits a screen)."""
    path = root / item.path
    with Image.open(path) as picture:
        width, height = picture.size
    return (f'<figure><img src="{data_uri(path)}" alt="{escape(alt)}" width="{width // shrink}" '
            f'height="{height // shrink}" data-file="{escape(item.path)}">'
            f"<figcaption>{escape(item.caption)}</figcaption></figure>")


def data_uri(path: str | os.PathLike) -> str:
    payload = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{payload}"


def escape(value) -> str:
    return html.escape(str(value), quote=True)
