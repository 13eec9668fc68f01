"""The command line: outputs, settings in the tokens file, one-line errors, no partial outputs."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from comit.cli import app
from comit.tokens_file import load_tokens

runner = CliRunner()


@pytest.fixture
def pictures(tmp_path):
    paths = []
    for i, size in enumerate([(80, 100), (64, 64), (200, 120)]):
        path = tmp_path / f"picture{i}.png"
        Image.new("RGB", size, color=(40 * i, 100, 200)).save(path)
        paths.append(path)
    return paths


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_tokenize_then_detokenize(tmp_path, tiny_model_dir, pictures):
    tokens_path = tmp_path / "tokens.safetensors"
    result = run("tokenize", *pictures, "-o", tokens_path, "-m", tiny_model_dir, "--order", "adaptive",
                 "--num-crops", 2, "--global-crop", "--seed", 3)
    assert result.exit_code == 0, result.output
    loaded = load_tokens(tokens_path)
    assert loaded.tokens.ids.shape == (3, 16) and loaded.tokens.crop_order.shape == (2, 3)
    assert (loaded.tokens.crop_order[0] == 0).all() and loaded.tokens.global_crop
    assert loaded.model == str(tiny_model_dir)
    assert loaded.settings == {"order": "adaptive", "num_crops": 2, "global_crop": True, "seed": 3}
    assert loaded.sources == [str(p) for p in pictures]
    out = tmp_path / "decoded"
    result = run("detokenize", tokens_path, "-o", out, "--steps", 2, "--cfg", 1.0)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["picture0.png", "picture1.png", "picture2.png"]
    assert Image.open(out / "picture0.png").size == (64, 64)


def test_reconstruct_with_an_explicit_order(tmp_path, tiny_model_dir, pictures):
    out = tmp_path / "rec"
    result = run("reconstruct", *pictures, "-o", out, "-m", tiny_model_dir, "--order", "4,1,7", "--steps", 1,
                 "--solver", "heun", "--batch-size", 2)
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.png"))) == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_same_seed_same_tokens(tmp_path, tiny_model_dir, pictures):
    for name in ("a", "b"):
        assert run("tokenize", *pictures, "-o", tmp_path / f"{name}.safetensors", "-m", tiny_model_dir,
                   "--order", "random", "--seed", 5).exit_code == 0
    a, b = load_tokens(tmp_path / "a.safetensors"), load_tokens(tmp_path / "b.safetensors")
    assert torch.equal(a.tokens.ids, b.tokens.ids) and torch.equal(a.tokens.crop_order, b.tokens.crop_order)


def assert_clean_failure(result, *fragments):
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line, line


def test_non_image_file_fails_cleanly_and_writes_nothing(tmp_path, tiny_model_dir, pictures):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    out = tmp_path / "never"
    result = run("reconstruct", pictures[0], bogus, "-o", out, "-m", tiny_model_dir)
    assert_clean_failure(result, "notes.png")
    assert not out.exists()
    tokens = tmp_path / "t.safetensors"
    assert_clean_failure(run("tokenize", bogus, "-o", tokens, "-m", tiny_model_dir), "notes.png")
    assert not tokens.exists()


def test_truncated_image(tmp_path, tiny_model_dir):
    path = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:200])
    assert_clean_failure(run("reconstruct", path, "-o", tmp_path / "o", "-m", tiny_model_dir), "cut.jpg")


@pytest.mark.parametrize("options,fragment", [
    (["--order", "4,4"], "twice"),
    (["--order", "1,x"], "comma-separated"),
    (["--order", "zigzag"], "unknown crop order"),
    (["--num-crops", "12"], "num_crops"),
    (["--solver", "rk4"], "unknown solver"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--device", "cuda:7"], "CUDA"),
])
def test_bad_options(tmp_path, tiny_model_dir, pictures, options, fragment):
    if fragment == "CUDA" and torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    out = tmp_path / "o"
    assert_clean_failure(run("reconstruct", pictures[0], "-o", out, "-m", tiny_model_dir, *options), fragment)
    assert not list(out.glob("*.png")) if out.exists() else True


def test_bad_models(tmp_path, pictures):
    assert_clean_failure(run("reconstruct", pictures[0], "-o", tmp_path / "o", "-m", tmp_path / "none" / "x"),
                         "not a hub id")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert_clean_failure(run("info", "-m", broken), "neither a COMiT config")


def test_bad_tokens_file(tmp_path, tiny_model_dir):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 10)
    assert_clean_failure(run("detokenize", path, "-o", tmp_path / "o"), "junk.safetensors")
    assert_clean_failure(run("detokenize", tmp_path / "missing.safetensors", "-o", tmp_path / "o"), "no tokens file")


def test_tokens_from_another_model_are_refused(tmp_path, tiny_model_dir, pictures):
    from conftest import tiny_config
    from comit import COMiT

    other = COMiT(tiny_config(num_msg_tokens=8)).save_pretrained(tmp_path / "other")
    tokens = tmp_path / "t.safetensors"
    assert run("tokenize", pictures[0], "-o", tokens, "-m", tiny_model_dir, "--num-crops", 1).exit_code == 0
    assert_clean_failure(run("detokenize", tokens, "-o", tmp_path / "o", "-m", other), "16 tokens")


def test_info(tiny_model_dir):
    result = run("info", "-m", tiny_model_dir)
    assert result.exit_code == 0
    summary = json.loads(result.output)
    assert summary["codebook_size"] == 64000 and summary["image_size"] == 64


def test_console_script_entry_point(tiny_model_dir):
    """The installed `comit` command (python -m comit.cli here) runs and fails cleanly."""
    ok = subprocess.run([sys.executable, "-m", "comit.cli", "info", "-m", str(tiny_model_dir)], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "comit.cli", "info", "-m", "/nonexistent/dir/x"], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and bad.stderr.startswith("error:")


def test_help_and_version_do_not_import_torch():
    """`comit --help` stays fast: torch (seconds to import) waits until a command runs."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom comit.cli import app\n"
            "for args in (['--help'], ['--version'], ['train', '--help'], ['eval', '--help']):\n"
            "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'gradio') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_public_names_resolve_lazily_and_are_the_library_s():
    import comit
    from comit.model.comit import COMiT, Tokens

    assert comit.COMiT is COMiT and comit.Tokens is Tokens
    assert set(comit.__all__) <= set(dir(comit))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        comit.nothing


@pytest.mark.parametrize("order, expected", [("raster_scan", 3), ("4,1,7,0", 4)])
def test_the_tokens_file_records_the_number_of_crops_actually_used(tmp_path, tiny_model_dir, pictures, order, expected):
    tokens_path = tmp_path / "tokens.safetensors"
    result = run("tokenize", *pictures, "-o", tokens_path, "-m", tiny_model_dir, "--order", order)
    assert result.exit_code == 0, result.output
    loaded = load_tokens(tokens_path)
    assert loaded.settings["num_crops"] == expected == loaded.tokens.crop_order.shape[0]


def test_one_line_warnings_for_images_the_model_sees_badly(tmp_path, tiny_model_dir):
    panorama, tiny, fine = tmp_path / "panorama.png", tmp_path / "tiny.png", tmp_path / "fine.png"
    Image.new("RGB", (400, 100)).save(panorama)
    Image.new("RGB", (6, 6)).save(tiny)
    Image.new("RGB", (80, 64)).save(fine)
    result = run("tokenize", panorama, tiny, fine, "-o", tmp_path / "t.safetensors", "-m", tiny_model_dir)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {panorama}: the centre crop keeps 25% of this 400x100 image; crop it to what matters first",
                        f"warning: {tiny}: 6x6 is upscaled 11x to the model's 64-px input: it will look blurry to the model"]


def test_fit_problems_of_a_large_photo():
    from comit.data.images import fit_problems

    assert fit_problems((1024, 768), 64) == ["1024x768 is shrunk 12x to the model's 64-px input: fine detail is lost; "
                                             "a model trained on larger images suits it better"]
    assert fit_problems((300, 280), 256) == []


def test_tokenize_takes_folders_and_quoted_globs(tmp_path, tiny_model_dir):
    folder = tmp_path / "photos"
    for relative in ("a.png", "b.jpg", "sub/c.png", "sub/deeper/d.png", ".hidden.png"):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), color=(len(relative) * 10, 0, 0)).save(folder / relative)
    (folder / "notes.txt").write_text("not an image")
    result = run("tokenize", folder, "-o", tmp_path / "all.safetensors", "-m", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert load_tokens(tmp_path / "all.safetensors").sources == [
        str(folder / r) for r in ("a.png", "b.jpg", "sub/c.png", "sub/deeper/d.png")]
    result = run("tokenize", f"{folder}/**/*.png", "-o", tmp_path / "png.safetensors", "-m", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert load_tokens(tmp_path / "png.safetensors").sources == [
        str(folder / r) for r in ("a.png", "sub/c.png", "sub/deeper/d.png")]


def test_a_glob_that_matches_nothing_is_one_line(tmp_path, tiny_model_dir):
    result = run("tokenize", f"{tmp_path}/*.png", "-o", tmp_path / "t.safetensors", "-m", tiny_model_dir)
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path}/*.png matches no image files (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff); check the pattern"
    assert not (tmp_path / "t.safetensors").exists()
