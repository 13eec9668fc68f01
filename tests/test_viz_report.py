"""A run's output folder: the PNGs, trace.json, and the self-contained HTML report."""

import base64
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from comit.viz import render
from comit.viz.trace import VizSettings, trace_images

RUN_INFO = {"title": "test run", "info": {"model": "tiny <random>", "order": "adaptive"}}


@pytest.fixture
def traces(tiny_model, tiny_images):
    return trace_images(tiny_model, tiny_images, VizSettings(order="adaptive", num_crops=3, steps=2, top_tokens=3))


def images_in(page: str) -> list[tuple[str, str]]:
    """(src, data-file) of every <img> of the page."""
    return re.findall(r'<img src="([^"]+)"[^>]*data-file="([^"]+)"', page)


def test_writes_every_figure_and_the_report(tmp_path, traces):
    report = render.write_run(tmp_path / "out", traces, ["a/cat.png", "b/dog.jpg"], RUN_INFO)
    out = tmp_path / "out"
    assert report == out / "index.html"
    assert sorted(p.name for p in out.iterdir()) == ["cat", "dog", "index.html"]
    for name in ("cat", "dog"):
        sizes = {p.name: Image.open(p).size for p in (out / name).glob("*.png")}
        assert sizes.keys() == {"crop_path.png", "reconstruction.png", "one_step.png", "attention_top.png",
                                "token_ids.png"}
        assert sizes["crop_path.png"] == sizes["reconstruction.png"] == (256, 256)
        overlays = sorted((out / name / "attention").glob("token_*.png"))
        assert len(overlays) == 3 and all(Image.open(p).size == (256, 256) for p in overlays)
        for path in (out / name).rglob("*.png"):
            colours = Image.open(path).convert("RGB").getcolors(maxcolors=1 << 20)
            assert len(colours) > 20, f"{path} is (nearly) blank"
    summary = json.loads((out / "cat" / "trace.json").read_text())
    assert summary["source"] == "a/cat.png"
    assert [crop["index"] for crop in summary["crops"]] == traces[0].crop_indices
    assert len(summary["one_step_psnr_db"]) == 3 and len(summary["token_ids"]) == 16
    assert summary["token_ids"] == traces[0].ids.tolist()


def test_report_embeds_exactly_the_written_pngs(tmp_path, traces):
    report = render.write_run(tmp_path, traces, ["cat.png", "dog.png"], RUN_INFO)
    page = report.read_text()
    embedded = images_in(page)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png"))
    assert sorted(path for _, path in embedded) == written  # every PNG shown once, nothing else
    for src, path in embedded:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (tmp_path / path).read_bytes()
    assert page.count("<img") == len(embedded)


def test_report_is_self_contained_and_its_links_resolve(tmp_path, traces):
    page = render.write_run(tmp_path, traces, ["cat.png", "dog.png"], RUN_INFO).read_text()
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    ids = set(re.findall(r'id="([^"]+)"', page))
    links = re.findall(r'href="#([^"]+)"', page)
    assert sorted(links) == ["cat", "dog"] and set(links) <= ids
    assert "tiny &lt;random&gt;" in page  # text from outside is escaped


def test_labels_describe_the_images_and_sources_name_the_folders(tmp_path, traces):
    report = render.write_run(tmp_path, traces, ["/x/cat.png", "/y/dog.png"], RUN_INFO, labels=["a cat", "a dog"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat", "dog", "index.html"]
    assert json.loads((tmp_path / "dog" / "trace.json").read_text())["source"] == "a dog"
    page = report.read_text()
    assert "a cat · crops in order" in page and "/x/cat.png" not in page


def test_repeated_and_odd_names_stay_apart(tmp_path, traces):
    render.write_run(tmp_path, traces, ["x/a b<1>.png", "y/a b<1>.png"], RUN_INFO)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_b_1_", "a_b_1_-1", "index.html"]
    assert render.unique_names(["index.html.png", "...", "c.png"]) == ["index.html-0", "image-1", "c"]


def test_a_rerun_replaces_the_previous_output(tmp_path, traces):
    render.write_run(tmp_path, traces, ["cat.png", "dog.png"], RUN_INFO)
    (tmp_path / "cat" / "stale.png").write_bytes(b"old")
    render.write_run(tmp_path, traces[:1], ["cat.png"], RUN_INFO)
    assert not (tmp_path / "cat" / "stale.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert "dog" not in "".join(re.findall(r'href="#([^"]+)"', (tmp_path / "index.html").read_text()))


def test_a_failure_leaves_the_folder_as_it_was(tmp_path, traces, monkeypatch):
    render.write_run(tmp_path, traces, ["cat.png", "dog.png"], RUN_INFO)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(render.figures, "token_grid", broken)
    with pytest.raises(OSError, match="disk full"):
        render.write_run(tmp_path, traces, ["cat.png", "dog.png"], {"title": "second run"})
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_traces_and_sources_must_match(tmp_path, traces):
    with pytest.raises(ValueError, match="2 traces for 1 images"):
        render.write_run(tmp_path, traces, ["cat.png"], RUN_INFO)
    with pytest.raises(ValueError, match="2 traces for 2 images \\(1 labels\\)"):
        render.write_run(tmp_path, traces, ["cat.png", "dog.png"], RUN_INFO, labels=["a cat"])
    assert not list(Path(tmp_path).iterdir())
