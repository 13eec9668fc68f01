"""`comit viz`, `comit demo` and the checks of `comit serve` (the running app: test_viz_browser.py)."""

import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from comit.cli import app
from comit.data import sample_paths

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def pictures(tmp_path):
    paths = []
    for i, size in enumerate([(90, 70), (64, 64)]):
        path = tmp_path / f"picture{i}.png"
        Image.new("RGB", size, color=(60 * i, 120, 200)).save(path)
        paths.append(path)
    return paths


def test_viz_writes_the_pictures_and_the_report(tmp_path, tiny_model_dir, pictures):
    out = tmp_path / "viz"
    result = run("viz", *pictures, "--out", out, "-m", tiny_model_dir, "--order", "raster_scan", "--num-crops", 2,
                 "--global-crop", "--steps", 2, "--top-tokens", 2, "--batch-size", 1)
    assert result.exit_code == 0, result.output
    assert str(out / "index.html") in result.output
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "picture0", "picture1"]
    assert len(list((out / "picture0" / "attention").glob("*.png"))) == 2
    page = (out / "index.html").read_text()
    assert "crops in order: #0, #1" in page and "global crop</b> True" in page


def test_demo_runs_on_the_bundled_samples(tmp_path, tiny_model_dir):
    out = tmp_path / "demo"
    result = run("demo", "--out", out, "--model", tiny_model_dir)
    assert result.exit_code == 0, result.output
    names = sorted(p.stem for p in sample_paths())
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == names
    assert "index.html" in result.output and "open " in result.output
    page = (out / "index.html").read_text()
    assert len(re.findall(r'<section id="', page)) == len(names)
    assert f"bundled sample {names[0]}.png" in page and "threads</b> 1" in page


def test_demo_threads_must_be_positive(tmp_path, tiny_model_dir):
    result = run("demo", "--out", tmp_path / "demo", "--model", tiny_model_dir, "--threads", 0)
    assert result.exit_code == 1 and "--threads" in result.output


@pytest.mark.parametrize("args, message", [
    (["--order", "4,12"], "out of range"),
    (["--order", "4,x"], "comma-separated integers"),
    (["--num-crops", "10"], "num_crops"),
    (["--steps", "0"], "steps"),
    (["--batch-size", "0"], "batch-size"),
])
def test_bad_settings_give_one_line_and_no_output(tmp_path, tiny_model_dir, pictures, args, message):
    out = tmp_path / "viz"
    result = run("viz", *pictures, "--out", out, "-m", tiny_model_dir, *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not out.exists() or not list(out.iterdir())


def test_a_non_image_fails_before_any_work(tmp_path, tiny_model_dir, pictures):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    out = tmp_path / "viz"
    result = run("viz", pictures[0], bad, "--out", out, "-m", tiny_model_dir)
    assert result.exit_code == 1 and "notes.png" in result.output and "Traceback" not in result.output
    assert not out.exists() or not list(out.iterdir())


def test_demo_with_a_missing_model_says_so(tmp_path):
    result = run("demo", "--out", tmp_path / "demo", "--model", tmp_path / "nowhere")
    assert result.exit_code == 1 and result.output.startswith("error:")


@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "--port"),
    (["--port", "70000"], "--port"),
    (["--max-upload-mb", "0"], "--max-upload-mb"),
])
def test_serve_rejects_bad_options_before_starting(args, message, tiny_model_dir):
    result = run("serve", "-m", tiny_model_dir, *args)
    assert result.exit_code == 1 and message in result.output


def test_serve_with_a_missing_model_fails_before_starting(tmp_path):
    result = run("serve", "-m", tmp_path / "nowhere", "--port", 7999)
    assert result.exit_code == 1 and result.output.startswith("error:")
