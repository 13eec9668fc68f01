"""The shared plotting module: PNGs from tables, gaps for missing values, clear errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from comit import plots


def _table():
    return [{"num_crops": k, "psnr": 10.0 + k * (2 if order == "adaptive" else 1), "policy": order}
            for order in ("raster_scan", "adaptive") for k in (3, 1, 2)]


def _lines(monkeypatch) -> list:
    """Capture what plot_curves draws: (label, xs, ys) per line."""
    drawn = []
    original = plots._save

    def spy(figure, path):
        drawn.extend((line.get_label(), list(line.get_xdata()), list(line.get_ydata()))
                     for line in figure.axes[0].get_lines())
        return original(figure, path)

    monkeypatch.setattr(plots, "_save", spy)
    return drawn


def test_curves_group_by_hue_and_sort_by_x(tmp_path, monkeypatch):
    drawn = _lines(monkeypatch)
    path = plots.plot_curves(_table(), x="num_crops", y="psnr", hue="policy", path=tmp_path / "a.png")
    assert Image.open(path).format == "PNG"
    assert drawn == [("raster_scan", [1, 2, 3], [11.0, 12.0, 13.0]), ("adaptive", [1, 2, 3], [12.0, 14.0, 16.0])]
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind


def test_missing_values_leave_gaps(tmp_path, monkeypatch):
    drawn = _lines(monkeypatch)
    table = _table() + [{"num_crops": 4, "psnr": None, "policy": "adaptive"},
                        {"num_crops": 5, "psnr": float("inf"), "policy": "adaptive"}]
    plots.plot_curves(table, x="num_crops", y="psnr", hue="policy", path=tmp_path / "b.png")
    assert drawn[1][1] == [1, 2, 3]


def test_bad_tables_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        plots.plot_curves([], x="a", y="b", path=tmp_path / "c.png")
    with pytest.raises(ValueError, match=r"\['ssim'\] are not in the table"):
        plots.plot_curves(_table(), x="num_crops", y="ssim", path=tmp_path / "c.png")
    with pytest.raises(ValueError, match="no row has numeric values"):
        plots.plot_curves([{"a": 1, "b": None}], x="a", y="b", path=tmp_path / "c.png")
    assert not list(tmp_path.iterdir())


def test_bars_and_image_rows(tmp_path):
    table = [{"task": t, "metric": m, "accuracy": a} for t, m, a in
             (("semantic", "top1", 0.5), ("semantic", "top5", 0.9), ("relational", "top1", None))]
    assert Image.open(plots.plot_bars(table, x="task", y="accuracy", hue="metric", path=tmp_path / "bars.png")).size
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    grid = plots.plot_image_rows([images, images[:2]], tmp_path / "grid.png", ["original", "reconstruction"])
    assert Image.open(grid).format == "PNG"
    with pytest.raises(ValueError, match="image batches"):
        plots.plot_image_rows([torch.rand(3, 8, 8)], tmp_path / "bad.png")


def test_curve_bands_and_bar_error_bars(tmp_path, monkeypatch):
    bands = []
    original = plots._save

    def spy(figure, path):
        bands.extend(collection.get_paths()[0].vertices[:, 1].tolist() for collection in figure.axes[0].collections)
        return original(figure, path)

    monkeypatch.setattr(plots, "_save", spy)
    table = [{"k": k, "v": float(k), "ci": 0.5 if k < 3 else None} for k in (1, 2, 3)]
    plots.plot_curves(table, x="k", y="v", band="ci", path=tmp_path / "band.png")
    assert len(bands) == 1 and min(bands[0]) == pytest.approx(0.5) and max(bands[0]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match=r"\['width'\] are not in the table"):
        plots.plot_curves(table, x="k", y="v", band="width", path=tmp_path / "bad.png")
    bars = [{"arm": a, "metric": "miou", "value": v, "ci": e} for a, v, e in (("L", 0.5, 0.1), ("G", 0.3, None))]
    assert Image.open(plots.plot_bars(bars, x="metric", y="value", hue="arm", yerr="ci",
                                      path=tmp_path / "err.png")).format == "PNG"
