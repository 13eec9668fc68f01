"""The bundled model's recipe script (scripts/train_bundled.sh): both steps, in order, restartable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from comit.train.checkpoint import latest_checkpoint
from comit.train.config import load_config

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_bundled.sh"
SHORT = ["loop.max_steps=2", "optim.batch_size=2", "optim.warmup_steps=1", "optim.decay_steps=1",
         "loop.eval_every=0", "loop.log_every=1", "data.num_workers=0"]


def recipe(out: Path, *overrides: str) -> str:
    done = subprocess.run(["bash", str(SCRIPT), str(out), *overrides], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "BIN": str(Path(sys.executable).parent), "OMP_NUM_THREADS": "1",
                               "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "bundled"
    recipe(out, *SHORT)
    return out


def test_the_second_step_starts_from_the_first(trained):
    fill = load_config(trained / "fill" / "config.yaml")
    assert fill.init.weights == str(trained / "global" / "model")
    assert fill.model.message_write == "local_fill" and fill.step.conveyor
    first = load_config(trained / "global" / "config.yaml")
    assert first.step.max_crops == 1 and first.step.global_first_p == 1.0 and first.init.weights is None
    for step in ("global", "fill"):
        assert (trained / step / "model" / "model.safetensors").is_file()


def test_bundling_the_recipe_counts_both_steps(trained, tmp_path):
    """scripts/bundle_model.py takes the last step's model and sums steps and images over the recipe."""
    out = tmp_path / "bundle"
    out.mkdir()
    done = subprocess.run([sys.executable, str(SCRIPT.parent / "bundle_model.py"), str(trained / "global"),
                           str(trained / "fill"), "--command", "scripts/train_bundled.sh (test)", "--minutes", "0.1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["steps"] == 2 + 2 and provenance["images_seen"] == 2 * 2 + 2 * 2
    assert "| optimiser steps | 4 |" in (out / "README.md").read_text()
    bundled = load_file(out / "model.safetensors")
    trained_weights = load_file(trained / "fill" / "model" / "model.safetensors")
    assert bundled.keys() == trained_weights.keys()
    for name, weight in bundled.items():
        assert weight.dtype == torch.float16
        assert torch.equal(weight, trained_weights[name].to(torch.float16)), name


def test_a_finished_step_is_kept_and_a_stopped_one_resumed(trained):
    """A second call trains nothing that is finished; a step stopped before its end goes on from its
    last checkpoint (here: a finished step's model removed, and two more steps asked for)."""
    global_model = (trained / "global" / "model" / "model.safetensors").read_bytes()
    (trained / "fill" / "model" / "model.safetensors").unlink()
    said = recipe(trained, *SHORT, "loop.max_steps=4")
    assert f"{trained / 'global'} is finished: kept" in said
    assert (trained / "global" / "model" / "model.safetensors").read_bytes() == global_model
    assert latest_checkpoint(trained / "fill" / "checkpoints").name == "step-000000004"
    assert (trained / "fill" / "model" / "model.safetensors").is_file()
