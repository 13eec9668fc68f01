"""The training loop end to end: shipped configs, overfitting, exact resume, SIGKILL, DDP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from comit import COMiT
from comit.train.checkpoint import latest_checkpoint, load_checkpoint
from comit.train.config import load_config, shipped_configs
from comit.train.loop import train
from comit.train.validation import ValidationResult

FAST = ["batch_size=4", "log_every=1", "checkpoint_every=1000"]
SWAP_STEPS, SWAP_FACTOR = 600, 1.4
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(config, out, resume=False, overrides=()):
    return train(load_config(config, list(overrides)) if not resume else
                 load_config(Path(out) / "config.yaml", list(overrides)), out, resume=resume, progress=False)


def metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def offline_weights(tmp_path_factory):
    """A tiny SD-VAE-shaped AutoencoderKL and a tiny DINOv2, random, saved locally like a hub download."""
    from diffusers import AutoencoderKL
    from transformers import Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("offline")
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4
                  ).save_pretrained(root / "vae")
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=56)).save_pretrained(root / "dinov2")
    images = root / "imagenet" / "train"
    for cls in ("n01", "n02"):
        (images / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((torch.rand(300, 280, 3) * 255).byte().numpy()).save(images / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_trains_two_steps(tmp_path, name, offline_weights):
    overrides = ["max_steps=2", "batch_size=2", "log_every=1", "sample_every=0"]
    if name.startswith("imagenet"):
        # The real loading paths (diffusers VAE, transformers teacher, an ImageNet-layout folder) on
        # tiny random local weights, the paper's geometry kept, the transformer shrunk.
        overrides += ["model.hidden_size=64", "model.depth=2", "model.num_heads=4", "model.num_msg_tokens=8",
                      "model.representation_layer=1", f"model.autoencoder.hub_id={offline_weights / 'vae'}",
                      f"teacher.name={offline_weights / 'dinov2'}", "teacher.image_size=56", "teacher.dtype=float32",
                      f"data.dataset={offline_weights / 'imagenet'}", "data.num_workers=0", "projector_hidden=32"]
    else:
        overrides += ["data.num_workers=1", "sample_every=2", "sample_images=2"]
    out = tmp_path / name
    model_dir = run(name, out, overrides=overrides)
    assert [record["step"] for record in metrics(out)] == [1, 2]
    assert {"loss", "fm", "lr", "grad_norm", "images_per_s"} <= set(metrics(out)[0])
    assert latest_checkpoint(out / "checkpoints").name == "step-000000002"
    model = COMiT.from_pretrained(model_dir, autoencoder=None if not name.startswith("imagenet") else
                                  _local_vae(offline_weights))
    assert model.config.num_msg_tokens == load_config(out / "config.yaml").model.num_msg_tokens
    if not name.startswith("imagenet"):
        assert (out / "samples" / "step-000000002.png").is_file()


def _local_vae(root):
    from comit import SDVAE

    return SDVAE.from_hub(hub_id=str(root / "vae"))


def test_overfit_sixteen_images(tmp_path):
    """A tiny model on 16 built-in images (the shipped tiny config, bundled teacher): the flow loss
    falls at least 3x and the codes do not collapse.

    Measured (2026-11-25, CPU): flow loss 1.34 -> 0.36 (means of the first two and last three logs);
    38 distinct ids over the 16 messages, 15 distinct messages. A collapsed run (SREPA without
    centring) gave 2 distinct ids and 1-4 distinct messages.
    """
    out = tmp_path / "overfit"
    model_dir = run("tiny", out, overrides=["data.dataset=shapes:num_images=16", "batch_size=16", "max_steps=300",
                                             "log_every=10", "checkpoint_every=1000"])
    fm = [record["fm"] for record in metrics(out)]
    first, last = sum(fm[:2]) / 2, sum(fm[-3:]) / 3
    assert last < first / 3, f"flow loss {first:.3f} -> {last:.3f}"
    from comit.data import build_dataset

    data = build_dataset("shapes:num_images=16", 64)
    images = torch.stack([data[i]["image"] for i in range(16)])
    tokens = COMiT.from_pretrained(model_dir).tokenize(images, order="raster_scan", num_crops=None)
    distinct_ids = len(set(tokens.ids.flatten().tolist()))
    distinct_messages = len({tuple(ids.tolist()) for ids in tokens.ids})
    assert distinct_ids >= 16, f"codes collapsed: {distinct_ids} distinct ids over 16 messages"
    assert distinct_messages >= 12, f"only {distinct_messages} distinct messages for 16 images"


# The recipe that makes a decoder read its message (shapes-latent's knobs) on the tiny model at 48 px
# (16-px crops), one message token per 8-px patch, global crop only, two images.
SWAP_RECIPE = ["model.image_size=48", "model.crop_size=16", "model.patch_size=8", "model.num_msg_tokens=36",
               "optim.lr=2e-3", "model.prediction=data", "step.flow_loss=data",
               "step.t_sampling=logit_normal", "step.t_mean=-0.5", "step.readout_weight=1.0",
               "step.global_warmup_steps=1000000", "init.message_positions=grid", "init.query_key=tied",
               "init.query_key_scale=2.0", "init.patch_gate=1.0", "init.message_gate=1.0",
               "optim.schedule=constant", "checkpoint_every=100000", "log_every=100"]


def test_the_message_is_used_after_a_short_overfit(tmp_path):
    """Swap two images' messages: the reconstruction error must grow clearly.

    Measured (2026-12-02, 2-core Xeon, one thread, ~20 s): own-message MSE 0.058 vs swapped 0.097
    after 600 steps (factor 1.68 one-step, 1.95 with 10 steps); 1,200 steps on 4 images at 64 px
    gave 2.2. Decoders of the recipes before shapes-latent's knobs gave 1.0-1.09.
    """
    images_count, steps = 2, SWAP_STEPS
    out = tmp_path / "swap"
    model_dir = run("tiny", out, overrides=SWAP_RECIPE + [f"data.dataset=shapes:num_images={images_count}",
                                                         f"batch_size={images_count}", f"max_steps={steps}"])
    from comit.data import build_dataset

    model = COMiT.from_pretrained(model_dir)
    data = build_dataset(f"shapes:num_images={images_count}", model.config.image_size)
    images = torch.stack([data[i]["image"] for i in range(images_count)])
    generator = torch.Generator().manual_seed(0)
    tokens = model.tokenize(images, global_crop=True, order="raster_scan", num_crops=1, generator=generator)
    noise = torch.randn(model.latent_shape(images_count), generator=generator)

    def error(messages, offsets):
        pictures = model.detokenize(messages, offsets, num_steps=1, cfg_weight=1.0, noise=noise)
        return float(((pictures.clamp(-1, 1) - images) ** 2).mean())

    own = error(tokens.messages, tokens.offsets)
    swapped = error(tokens.messages.roll(1, 0), tokens.offsets.roll(1, 0))
    assert swapped > SWAP_FACTOR * own, f"own-message MSE {own:.4f}, swapped {swapped:.4f}"


def test_resume_is_exact(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = FAST + ["data.dataset=shapes:num_images=10"]  # 10 images: steps cross epoch boundaries
    run("tiny", straight, overrides=common + ["max_steps=6"])
    run("tiny", split, overrides=common + ["max_steps=3"])
    run("tiny", split, resume=True, overrides=["max_steps=6"])
    a = load_file(str(latest_checkpoint(straight / "checkpoints") / "training.safetensors"))
    b = load_file(str(latest_checkpoint(split / "checkpoints") / "training.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in metrics(straight)] == [r["loss"] for r in metrics(split)]
    # The resumed process counts on from the time its checkpoint carried, so a run's cost survives resumes.
    seconds = [r["train_s"] for r in metrics(split)]
    assert seconds == sorted(seconds) and seconds[3] > seconds[2] > 0, seconds
    provenance = json.loads((split / "model" / "provenance.json").read_text())
    assert provenance["wall_time_minutes"] == pytest.approx(seconds[-1] / 60, abs=0.01)


def test_provenance_records_the_precision_auto_resolved_to(tmp_path, monkeypatch):
    from comit import devices

    for has_units, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(devices, "cpu_has_bf16_units", lambda flags=None, has_units=has_units: has_units)
        out = tmp_path / expected
        run("tiny", out, overrides=FAST + ["max_steps=1", "loop.precision=auto", "loop.device=cpu"])
        assert json.loads((out / "model" / "provenance.json").read_text())["precision"] == expected
        assert f"| precision | {expected} |" in (out / "model" / "README.md").read_text()


def test_conveyor_resume_is_exact_and_refuses_another_world_size(tmp_path):
    """The conveyor's belt (images and messages in flight) is part of the checkpoint: resuming
    mid-sequence continues bit for bit."""
    from comit.train.checkpoint import ResumeError
    from comit.train.loop import Trainer

    straight, split = tmp_path / "straight", tmp_path / "split"
    common = FAST + ["data.dataset=shapes:num_images=10", "step.conveyor=true", "batch_size=2"]
    run("tiny", straight, overrides=common + ["max_steps=6"])
    run("tiny", split, overrides=common + ["max_steps=3"])
    run("tiny", split, resume=True, overrides=["max_steps=6"])
    a = load_file(str(latest_checkpoint(straight / "checkpoints") / "training.safetensors"))
    b = load_file(str(latest_checkpoint(split / "checkpoints") / "training.safetensors"))
    assert any(key.startswith("model.conveyor.") for key in a), "the belt is saved"
    assert a["model.conveyor.column"].shape == (1, 2 * 10), "one row per process, batch x length slots"
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in metrics(straight)] == [r["loss"] for r in metrics(split)]
    trainer = Trainer(load_config(split / "config.yaml"), split)
    trainer.process.world_size = 2
    with pytest.raises(ResumeError, match="written by 1 processes.*the same number"):
        trainer.restore()


def test_global_warmup_is_global_only_steps_then_the_sequences(tmp_path):
    """step.global_warmup_steps=N trains exactly as N global-crop-only steps (global_first_p=1,
    max_crops=1) resumed with the paper's sequences: the one-command form of the two-phase recipe."""
    curriculum, phases = tmp_path / "curriculum", tmp_path / "phases"
    common = FAST + ["data.dataset=shapes:num_images=10"]
    run("tiny", curriculum, overrides=common + ["max_steps=4", "step.global_warmup_steps=2"])
    run("tiny", phases, overrides=common + ["max_steps=2", "step.global_first_p=1.0", "step.max_crops=1"])
    run("tiny", phases, resume=True, overrides=["max_steps=4", "step.global_first_p=0.5", "step.max_crops=null"])
    a = load_file(str(latest_checkpoint(curriculum / "checkpoints") / "training.safetensors"))
    b = load_file(str(latest_checkpoint(phases / "checkpoints") / "training.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses = [r["loss"] for r in metrics(curriculum)]
    assert losses == [r["loss"] for r in metrics(phases)]
    plain = tmp_path / "plain"
    run("tiny", plain, overrides=common + ["max_steps=4"])
    c = load_file(str(latest_checkpoint(plain / "checkpoints") / "training.safetensors"))
    assert any(not torch.equal(a[key], c[key]) for key in a), "the warm-up trains otherwise than the sequences"


def test_resume_refusals(tmp_path):
    from comit.train.checkpoint import ResumeError
    from comit.train.loop import prepare_run

    with pytest.raises(ResumeError, match="nothing to resume"):
        prepare_run(None, tmp_path / "empty", resume=True, overrides=[])
    run("tiny", tmp_path / "done", overrides=FAST + ["max_steps=1"])
    with pytest.raises(ResumeError, match="already holds a run; pass --resume"):
        prepare_run(None, tmp_path / "done", resume=False, overrides=[])


def test_partial_checkpoint_is_ignored(tmp_path):
    """What a kill mid-write leaves (a staging folder, a folder without its state) is never loaded."""
    out = tmp_path / "run"
    run("tiny", out, overrides=FAST + ["max_steps=2", "checkpoint_every=1", "keep_last=5"])
    folder = out / "checkpoints"
    (folder / ".step-000000003.abc.tmp").mkdir()
    (folder / ".step-000000003.abc.tmp" / "training.safetensors").write_bytes(b"\0" * 10)
    (folder / "step-000000004").mkdir()  # no state.json: incomplete
    assert latest_checkpoint(folder).name == "step-000000002"
    run("tiny", out, resume=True, overrides=["max_steps=3"])
    assert latest_checkpoint(folder).name == "step-000000003"
    assert not list(folder.glob(".*.tmp")), "stale staging folders are cleaned up"


def test_sigkill_during_checkpointing_resumes(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "comit.train", "tiny", "--out", str(out), "max_steps=100000",
               "checkpoint_every=1", "keep_last=2", "log_every=1", "batch_size=2"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while latest_checkpoint(out / "checkpoints") is None or \
                int(latest_checkpoint(out / "checkpoints").name[5:]) < 5:
            assert time.time() < deadline and process.poll() is None, "training did not start"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)  # every step writes a checkpoint: most kills land mid-write
        process.wait()
    last = latest_checkpoint(out / "checkpoints")
    state = load_checkpoint(last)
    assert state.step == int(last.name[5:])
    run("tiny", out, resume=True, overrides=[f"max_steps={state.step + 1}"])
    assert latest_checkpoint(out / "checkpoints").name == f"step-{state.step + 1:09d}"


def torchrun_tiny(out, *arguments) -> str:
    """``torchrun`` with 2 CPU processes on the tiny config; returns stdout, fails on an error."""
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "comit.train", "tiny", "--out", str(out),
               *arguments]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_torchrun_two_processes_stay_in_sync(tmp_path):
    out = tmp_path / "ddp"
    stdout = torchrun_tiny(out, "max_steps=3", "batch_size=4", "log_every=1", "teacher.kind=shapes")
    assert "parameters identical on all 2 processes" in stdout
    assert [r["step"] for r in metrics(out)] == [1, 2, 3], "only rank 0 writes metrics"
    assert COMiT.from_pretrained(out / "model").config.num_msg_tokens == 16


def test_torchrun_conveyor_keeps_one_belt_per_process(tmp_path):
    out = tmp_path / "ddp"
    stdout = torchrun_tiny(out, "max_steps=2", "batch_size=4", "log_every=1", "step.conveyor=true")
    assert "parameters identical on all 2 processes" in stdout
    belts = load_file(str(latest_checkpoint(out / "checkpoints") / "training.safetensors"))
    images = belts["model.conveyor.images"]
    assert images.shape[0] == 2, "both processes' belts are saved"
    assert not torch.equal(images[0], images[1]), "each process carries its own images"
    torchrun_tiny(out, "--resume", "max_steps=3")  # each process takes its own belt back


def test_learning_rate_schedules():
    from comit.train.loop import learning_rate

    assert learning_rate(0, 1.0, 10) == pytest.approx(0.1)
    assert learning_rate(39, 1.0, 10) == pytest.approx(0.5), "inverse sqrt: sqrt(10 / 40)"
    assert learning_rate(500, 1.0, 10, "constant", 1000) == 1.0
    assert learning_rate(10, 1.0, 10, "cosine", 1010) == pytest.approx(1.0)
    assert learning_rate(510, 1.0, 10, "cosine", 1010) == pytest.approx(0.5)
    assert learning_rate(1009, 1.0, 10, "cosine", 1010) == pytest.approx(0.0, abs=1e-4)
    assert learning_rate(799, 1.0, 10, "wsd", 1000, 200) == 1.0, "stable until the decay starts"
    assert learning_rate(900, 1.0, 10, "wsd", 1000, 200) == pytest.approx(0.5)
    assert learning_rate(1000, 1.0, 10, "wsd", 1000, 200) == 0.0


def test_held_out_curve_is_written_and_survives_resume(tmp_path):
    """loop.eval_every scores the EMA model on held-out images into val.jsonl; a resumed run
    replaces the lines past its checkpoint instead of duplicating them."""
    out = tmp_path / "curve"
    overrides = [*FAST, "max_steps=4", "eval_every=2", "eval_images=4", "checkpoint_every=2"]
    run("tiny", out, overrides=overrides)
    lines = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert {"psnr", "psnr_one_step", "psnr_other", "psnr_gain", "psnr_local", "psnr_global", "psnr_global_gain",
            "images_seen"} <= set(lines[0])
    assert lines[1]["images_seen"] == 4 * 4
    assert lines[0]["psnr_gain"] == pytest.approx(lines[0]["psnr"] - lines[0]["psnr_other"], abs=1e-3)
    run("tiny", out, resume=True, overrides=["max_steps=6"])
    assert [json.loads(line)["step"] for line in (out / "val.jsonl").read_text().splitlines()] == [2, 4, 6]


def test_the_logged_val_line_says_what_the_global_crop_alone_reads():
    """A run trained on the global crop alone (step 1 of the bundled model's recipe) is judged by the
    global crop's numbers; its line must show them, not only the local-crop sequence's."""
    result = ValidationResult(step=2000, images_seen=64000, psnr=13.30, psnr_one_step=13.05, psnr_other=12.54,
                              psnr_local=13.10, psnr_global=25.15, psnr_global_other=12.63)
    assert result.summary() == ("step 2000: val PSNR 13.30 dB (one step 13.05), gain over another image 0.76 dB; "
                                "global crop alone 25.15 dB (gain 12.52); local crops alone 13.10 dB")
