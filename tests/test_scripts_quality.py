"""The scripts that produce the bundled model's quality numbers and figures, run on a tiny model.

scripts/quality.sh is `make quality` (the issue's acceptance table); scripts/before_after.py draws
the docs' before/after figures and, with ``--paired``, compares two models image by image.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from comit import COMiT

from conftest import randomize, tiny_config

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "BIN": str(Path(sys.executable).parent)}


def run(*command: str) -> str:
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_quality_script_writes_the_acceptance_table(tiny_model_dir, tmp_path):
    out = tmp_path / "quality"
    run("bash", str(SCRIPTS / "quality.sh"), str(tiny_model_dir), str(out), "4")
    report = (out / "quality.md").read_text()
    assert "on 4 shapes val images" in report
    for row in ("| global + all 9 local crops |", "| adaptive, 3 local crops |", "Token-object alignment"):
        assert row in report
    for part in ("all-crops", "adaptive-3", "align"):
        assert (out / part / "results.json").is_file()


def test_before_after_pairs_a_model_with_itself_to_zero(tiny_model_dir, tmp_path):
    """The same model on both sides, with the same noise: every paired difference is exactly 0."""
    figure = tmp_path / "figure.png"
    said = run(sys.executable, str(SCRIPTS / "before_after.py"), str(tiny_model_dir), str(tiny_model_dir),
               "-o", str(figure), "-n", "2", "--policies", "all", "adaptive3", "--paired", "4")
    with Image.open(figure) as image:
        assert image.width > 0 and image.height > image.width  # 5 rows of 2: the image, 2 policies x 2 models
    lines = [line for line in said.splitlines() if " on 4 images: " in line]
    assert [line.split(" on ")[0] for line in lines] == ["all", "adaptive3"]
    for line in lines:
        assert "new - old +0.00 +- 0.00 dB" in line and "new better on 0%" in line, line


def test_before_after_tells_two_models_apart(tiny_model_dir, tmp_path):
    other = randomize(COMiT(tiny_config()), seed=1).save_pretrained(tmp_path / "other")
    said = run(sys.executable, str(SCRIPTS / "before_after.py"), str(tiny_model_dir), str(other),
               "-o", str(tmp_path / "figure.png"), "-n", "2", "--paired", "4")
    line = next(line for line in said.splitlines() if line.startswith("all on 4 images: "))
    old, new, difference = (float(value) for value in
                            re.search(r"old (\S+) dB, new (\S+) dB, new - old (\S+) \+-", line).groups())
    assert abs((new - old) - difference) <= 0.011  # the printed difference is the mean of the pairs
    assert difference != 0.0


def test_photo_crops_are_a_folder_comit_reads_and_the_same_every_time(tmp_path):
    from comit.data import build_dataset

    for out in (tmp_path / "a", tmp_path / "b"):
        run(sys.executable, str(SCRIPTS / "photo_crops.py"), str(out), "--train", "13", "--val", "4", "--size", "16")
    train, val = sorted((tmp_path / "a" / "train").glob("*.png")), sorted((tmp_path / "a" / "val").glob("*.png"))
    assert len(train) == 13 and len(val) == 4 and Image.open(val[0]).size == (16, 16)
    assert not {p.stem.split("-", 1)[1] for p in train} & {p.stem.split("-", 1)[1] for p in val}  # held-out photographs
    assert [p.read_bytes() for p in val] == [p.read_bytes() for p in sorted((tmp_path / "b" / "val").glob("*.png"))]
    assert len(build_dataset(str(tmp_path / "a"), 16, split="val")) == 4
    refused = subprocess.run([sys.executable, str(SCRIPTS / "photo_crops.py"), str(tmp_path / "a")],
                             capture_output=True, text=True, env=ENV)
    assert refused.returncode != 0 and "already holds" in refused.stderr


def test_autoencoder_ceiling_prints_one_psnr(tiny_model_dir):
    said = run(sys.executable, str(SCRIPTS / "autoencoder_ceiling.py"), str(tiny_model_dir), "-n", "4")
    assert re.fullmatch(r"pixel autoencoder alone on 4 val images of shapes: PSNR inf dB\n", said)  # pixels: exact
