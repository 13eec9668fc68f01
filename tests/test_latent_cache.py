"""Cached autoencoder latents for training (``comit cache-latents``, ``data.latent_cache``)."""

import json

import pytest
import torch
from torch.utils.data import default_collate
from typer.testing import CliRunner

from comit.cli import app
from comit.data import build_dataset
from comit.model.autoencoders import PixelAutoencoder, SDVAE, encode_moments
from comit.model.crops import CropGrid
from comit.train.config import StepConfig, load_config
from comit.train.latent_cache import (CachedLatents, LatentCache, LatentCacheError, cache_identity,
                                      write_latent_cache)
from comit.train.loop import build_model, train
from comit.train.step import TrainingStep

DATA = "shapes:num_images=6"


def _config(**extra):
    overrides = [f"data.dataset={DATA}", *[f"{key}={value}" for key, value in extra.items()]]
    return load_config("tiny", overrides)


def _write(out, config=None, shard_size=4):
    config = config or _config()
    dataset = build_dataset(config.data.dataset, config.model.image_size, split="train")
    grid = CropGrid(config.model.image_size, config.model.crop_size, config.model.grid_size)
    write_latent_cache(PixelAutoencoder(), grid, dataset, cache_identity(config, len(dataset)), out,
                       batch_size=4, shard_size=shard_size)
    return config, dataset, grid


def test_the_cache_holds_each_image_and_every_grid_crop(tmp_path):
    config, dataset, grid = _write(tmp_path / "cache")
    cache = LatentCache(tmp_path / "cache", cache_identity(config, len(dataset)))
    assert len(cache) == 6 and len(cache.shards) == 2  # 4 + 2 images
    for i in (0, 5):
        item, image = cache[i], dataset[i]["image"]
        assert torch.equal(item["full_mean"].float(), image.half().float())  # pixel space: the image itself
        assert not bool(item["full_std"].any())
        for cell in range(grid.num_local):
            box = grid.local_box(cell)
            crop = image[:, box.top:box.top + box.size, box.left:box.left + box.size]
            assert torch.equal(item["crops_mean"][cell].float(), crop.half().float())


def test_a_step_from_the_cache_is_the_step_that_encodes(tmp_path):
    """Same seed, same batch: drawing the latents from the cache gives the loss of encoding them
    (pixel space, where float16 storage is exact for these images at this tolerance)."""
    config, dataset, _ = _write(tmp_path / "cache")
    cache = LatentCache(tmp_path / "cache", cache_identity(config, len(dataset)))
    batch = default_collate([{**dataset[i], **cache[i]} for i in range(4)])
    images = batch["image"].half().float()  # what the cache stores
    losses = []
    for latents in (None, CachedLatents.from_batch(batch, torch.device("cpu"))):
        torch.manual_seed(0)
        model = build_model(config)
        step = TrainingStep(model, StepConfig(min_crops=3, max_crops=4, global_first_p=0.5)).train()
        torch.manual_seed(1)
        losses.append(step(images, latents=latents).loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-6)


def test_a_rerun_keeps_finished_shards_and_refuses_other_settings(tmp_path):
    out = tmp_path / "cache"
    _write(out)
    first = (out / "latents-00000.safetensors").stat().st_mtime_ns
    (out / "latents-00001.safetensors").unlink()
    _write(out)
    assert (out / "latents-00001.safetensors").is_file()
    assert (out / "latents-00000.safetensors").stat().st_mtime_ns == first, "a finished shard is not redone"
    with pytest.raises(LatentCacheError, match="other settings .*crop_size"):
        _write(out, _config(**{"model.crop_size": 32, "model.grid_size": 3}))


def test_a_run_refuses_a_cache_of_other_settings(tmp_path):
    config, dataset, _ = _write(tmp_path / "cache")
    other = _config(**{"data.dataset": "shapes:num_images=6,seed=3"})
    with pytest.raises(LatentCacheError, match="made for other settings .*dataset"):
        LatentCache(tmp_path / "cache", cache_identity(other, len(dataset)))
    with pytest.raises(LatentCacheError, match="no latent cache folder"):
        LatentCache(tmp_path / "nothing", cache_identity(config, len(dataset)))


@pytest.mark.parametrize("setting, reason", [
    ({"data.flip": True}, "data.flip"),
    ({"step.crop_positions": "random"}, "step.crop_positions=random"),
    ({"step.conveyor": True}, "step.conveyor"),
])
def test_settings_a_cache_cannot_serve_are_refused(tmp_path, setting, reason):
    with pytest.raises(ValueError, match=f"data.latent_cache cannot serve {reason}"):
        _config(**{"data.latent_cache": str(tmp_path), **setting})


def test_sd_vae_moments_are_the_scaled_posterior():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    small = AutoencoderKL(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                          down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        posterior = small.encode(images).latent_dist
        mean, std = encode_moments(SDVAE(vae=small), images)
        torch.testing.assert_close(mean, posterior.mean * SDVAE(vae=small).scaling_factor)
        torch.testing.assert_close(std, posterior.std * SDVAE(vae=small).scaling_factor)
        assert bool((std > 0).all())
        _, fixed = encode_moments(SDVAE(vae=small, sample_posterior=False), images)
        assert not bool(fixed.any()), "no posterior sampling: nothing to draw"


def test_cache_latents_then_train_from_it(tmp_path):
    runner = CliRunner()
    data = "data.dataset=shapes:num_images=8"
    result = runner.invoke(app, ["cache-latents", "tiny", data, "--out", str(tmp_path / "cache"),
                                 "--device", "cpu", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["num_images"] == 8 and index["dataset"] == "shapes:num_images=8"
    config = load_config("tiny", [data, f"data.latent_cache={tmp_path / 'cache'}", "max_steps=2", "batch_size=4",
                                  "log_every=1", "device=cpu"])
    model_dir = train(config, tmp_path / "run", progress=False)
    assert (model_dir / "model.safetensors").is_file()
