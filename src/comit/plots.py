"""Plots from tables: one row per measurement, columns named by the caller.

Every function takes a *table* — a list of dicts such as the rows of an evaluation's
``results.json`` — and the names of the columns to draw, writes one PNG atomically and returns its
path. Nothing here knows about COMiT; evaluation, benchmarks and pictures share it.

Matplotlib is an optional dependency (``pip install comit[eval]``); it is imported on first use
with the non-interactive Agg backend, so plotting works on machines without a display.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .io import atomic_write

Table = Sequence[Mapping[str, object]]

_DPI = 120
_FIGURE_SIZE = (5.5, 3.6)


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or a one-line install hint."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'comit[eval]'") from error
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _number(value) -> float | None:
    """A plottable float, or None for missing / non-numeric / non-finite values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _check_columns(table: Table, *columns: str | None) -> None:
    if not table:
        raise ValueError("nothing to plot: the table has no rows")
    known = set().union(*(row.keys() for row in table))
    missing = [c for c in columns if c is not None and c not in known]
    if missing:
        raise ValueError(f"column(s) {missing} are not in the table; it has {sorted(known)}")


def _groups(table: Table, hue: str | None) -> dict[str, list[Mapping[str, object]]]:
    """Rows grouped by the text of their ``hue`` value, in order of first appearance."""
    groups: dict[str, list[Mapping[str, object]]] = {}
    for row in table:
        key = "" if hue is None else str(row.get(hue, ""))
        groups.setdefault(key, []).append(row)
    return groups


def _save(figure, path: str | os.PathLike) -> Path:
    """Write the figure next to ``path`` and rename it in place: no half-written PNG."""
    path = Path(path)
    try:
        atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=_DPI, bbox_inches="tight"))
    finally:
        _pyplot().close(figure)
    return path


def _label(axes, x: str, y: str, xlabel: str | None, ylabel: str | None, title: str | None) -> None:
    axes.set_xlabel(xlabel or x)
    axes.set_ylabel(ylabel or y)
    if title:
        axes.set_title(title)
    axes.grid(True, alpha=0.3)


def plot_curves(table: Table, x: str, y: str, path: str | os.PathLike, hue: str | None = None,
                title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
                logx: bool = False, band: str | None = None) -> Path:
    """One line per value of ``hue`` (or a single line) of ``y`` against ``x``, markers at points.

    Rows are sorted by ``x`` within each line; rows whose ``x`` or ``y`` is missing, non-numeric
    or not finite are left out (a metric that could not be measured leaves a gap, not a crash).
    ``band`` names a column of half-widths (e.g. a 95 % interval) drawn as a shaded band
    ``y ± band`` around each line; a missing half-width draws no band at that point.
    """
    _check_columns(table, x, y, hue, band)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=_FIGURE_SIZE)
    drawn = 0
    for name, rows in _groups(table, hue).items():
        points = sorted((px, py, _number(r.get(band)) if band else None)
                        for px, py, r in ((_number(r.get(x)), _number(r.get(y)), r) for r in rows)
                        if px is not None and py is not None)
        if not points:
            continue
        xs, ys, widths = zip(*points)
        line, = axes.plot(xs, ys, marker="o", markersize=4, label=name or None)
        if band and any(w is not None for w in widths):
            low = [py - (w or 0.0) for py, w in zip(ys, widths)]
            high = [py + (w or 0.0) for py, w in zip(ys, widths)]
            axes.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
    if drawn == 0:
        plt.close(figure)
        raise ValueError(f"no row has numeric values for both {x!r} and {y!r}")
    if logx:
        axes.set_xscale("log")
    if hue is not None:
        axes.legend(title=hue, fontsize="small")
    _label(axes, x, y, xlabel, ylabel, title)
    return _save(figure, path)


def plot_bars(table: Table, x: str, y: str, path: str | os.PathLike, hue: str | None = None,
              title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
              yerr: str | None = None) -> Path:
    """Grouped bars: one group per value of ``x`` (categories, in order of first appearance), one
    bar per value of ``hue`` inside each group; missing values leave an empty slot. ``yerr`` names
    a column of half-widths drawn as error bars (e.g. a 95 % interval)."""
    _check_columns(table, x, y, hue, yerr)
    plt = _pyplot()
    categories = list(dict.fromkeys(str(row.get(x)) for row in table))
    groups = _groups(table, hue)
    width = 0.8 / len(groups)
    figure, axes = plt.subplots(figsize=_FIGURE_SIZE)
    for g, (name, rows) in enumerate(groups.items()):
        values = {str(r.get(x)): _number(r.get(y)) for r in rows}
        errors = {str(r.get(x)): _number(r.get(yerr)) if yerr else None for r in rows}
        positions = [c + (g - (len(groups) - 1) / 2) * width for c in range(len(categories))]
        heights = [values.get(c) for c in categories]
        shown = [(p, h, errors.get(c)) for p, h, c in zip(positions, heights, categories) if h is not None]
        axes.bar([p for p, _, _ in shown], [h for _, h, _ in shown], width=width, label=name or None,
                 yerr=[e or 0.0 for _, _, e in shown] if yerr else None, capsize=3 if yerr else 0)
    crowded = sum(len(c) for c in categories) > 40  # more text than fits under the bars level
    axes.set_xticks(range(len(categories)), categories, rotation=25 if crowded else 0,
                    ha="right" if crowded else "center")
    if hue is not None:
        axes.legend(title=hue, fontsize="small")
    _label(axes, x, y, xlabel, ylabel, title)
    return _save(figure, path)


def plot_image_rows(rows: Sequence[torch.Tensor], path: str | os.PathLike,
                    row_titles: Sequence[str] | None = None, title: str | None = None) -> Path:
    """A grid of images: each entry of ``rows`` is a batch ``[N, 3, H, W]`` in [-1, 1] drawn as
    one row (e.g. originals above reconstructions)."""
    if not rows or any(r.ndim != 4 or r.shape[1] != 3 for r in rows):
        raise ValueError("plot_image_rows needs one or more image batches [N, 3, H, W]")
    plt = _pyplot()
    columns = max(r.shape[0] for r in rows)
    figure, axes = plt.subplots(len(rows), columns, squeeze=False,
                                figsize=(1.3 * columns, 1.4 * len(rows)))
    for r, batch in enumerate(rows):
        for c in range(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c < batch.shape[0]:
                pixels = ((batch[c].detach().float().cpu() + 1) / 2).clamp(0, 1).permute(1, 2, 0)
                axis.imshow(pixels.numpy(), interpolation="nearest")
            else:
                axis.axis("off")
        if row_titles:
            axes[r][0].set_ylabel(row_titles[r], fontsize="small")
    if title:
        figure.suptitle(title)
    return _save(figure, path)
