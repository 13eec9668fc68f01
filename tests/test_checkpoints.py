import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from comit import COMiT, CheckpointError, ModelConfig, PixelAutoencoder, SDVAE
from comit.model.config import AutoencoderConfig

from conftest import randomize, tiny_config
from golden import DATA, golden_metadata, golden_tensors, stub_autoencoder, write_released_checkpoint


def assert_same_model(a: COMiT, b: COMiT):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_round_trip_is_exact(tmp_path, tiny_model, tiny_images):
    directory = tiny_model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = COMiT.from_pretrained(directory)
    assert loaded.config == tiny_model.config
    assert_same_model(loaded, tiny_model)
    noise = torch.randn(2, 3, 64, 64)
    a = tiny_model.reconstruct(tiny_images, num_steps=2, noise=noise, tokenize_noise=noise)
    b = loaded.reconstruct(tiny_images, num_steps=2, noise=noise, tokenize_noise=noise)
    assert torch.equal(a, b)


def test_half_precision_storage(tmp_path, tiny_model):
    """dtype=float16 halves the file; loading casts back to fp32 and the weights equal the rounded ones."""
    full = tiny_model.save_pretrained(tmp_path / "full") / "model.safetensors"
    half = tiny_model.save_pretrained(tmp_path / "half", dtype=torch.float16) / "model.safetensors"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = COMiT.from_pretrained(half.parent)
    for (name, original), (_, restored) in zip(tiny_model.predictor.state_dict().items(),
                                               loaded.predictor.state_dict().items()):
        assert restored.dtype == torch.float32, name
        assert torch.equal(restored, original.half().float()), name


def sd_config(**kw):
    return ModelConfig.sized("tiny", num_msg_tokens=8, patch_size=2, image_size=64, crop_size=32, grid_size=3,
                             representation_layer=1, autoencoder=AutoencoderConfig(kind="sd-vae", **kw))


def test_sd_vae_path_offline(tmp_path):
    """A randomly initialised AutoencoderKL of the SD config: saved under vae.vae.* with the
    released key names, loaded back exactly, and usable end to end."""
    torch.manual_seed(0)
    model = randomize(COMiT(sd_config(sample_posterior=False)))
    assert isinstance(model.vae, SDVAE)
    directory = model.save_pretrained(tmp_path / "sd")
    weights = load_file(str(directory / "model.safetensors"))
    manifest = json.loads((DATA / "manifest-comit-b.json").read_text())["keys"]
    vae_manifest = {k: v for k, v in manifest.items() if k.startswith("vae.")}
    assert {k: list(v.shape) for k, v in weights.items() if k.startswith("vae.")} == vae_manifest
    loaded = COMiT.from_pretrained(directory)
    assert_same_model(loaded, model)
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    latents = loaded.vae.encode(images)
    assert latents.shape == (1, 4, 8, 8)
    out = loaded.reconstruct(images, num_crops=2, num_steps=1, cfg_weight=1.0)
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_released_layout_with_sd_vae(tmp_path):
    """Released checkpoints are 256-px models (latent 32) with 96-px crops on a 3x3 grid."""
    torch.manual_seed(0)
    model = randomize(COMiT(sd_config(model_type="ema").model_copy(update={"image_size": 256, "crop_size": 96})))
    tensors = {f"predictor.{k}": v for k, v in model.predictor.state_dict().items()}
    tensors.update({f"vae.{k}": v.contiguous() for k, v in model.vae.state_dict().items()})
    directory = tmp_path / "released"
    directory.mkdir()
    save_file(tensors, str(directory / "model.safetensors"))
    predictor = {"_target_": "comit.components.predictor.dit.RuledDiT", "hidden_size": 64, "depth": 2,
                 "num_heads": 4, "num_msg_tokens": 8, "msg_tokens_dim": 6, "patch_size": 2, "max_input_size": 32,
                 "in_channels": 4, "out_channels": 4, "representation_layer": 1, "mlp_ratio": 4.0}
    config = {"predictor": predictor, "quantizer": {"levels": [8, 8, 8, 5, 5, 5]},
              "vae": {"_target_": "comit.components.vae.sd_autoencoder_kl.SDAutoencoderKL", "model_type": "ema"}}
    (directory / "config.json").write_text(json.dumps(config))
    loaded = COMiT.from_pretrained(directory)
    assert loaded.config.attention == "released"
    assert loaded.config.autoencoder.kind == "sd-vae" and loaded.config.autoencoder.model_type == "ema"
    assert loaded.config.image_size == 256
    for key, value in model.vae.state_dict().items():
        assert torch.equal(loaded.vae.state_dict()[key], value)
    assert COMiT.from_pretrained(directory, attention="hard").config.attention == "hard"
    # a caller's autoencoder replaces the stored one
    replaced = COMiT.from_pretrained(directory, autoencoder=SDVAE())
    assert not torch.equal(replaced.vae.state_dict()["vae.decoder.conv_out.weight"],
                           model.vae.state_dict()["vae.decoder.conv_out.weight"])


def fake_hub_cache(root, repo_id, source):
    """The layout huggingface_hub keeps: refs/main -> snapshots/<commit>/files."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((source / name).read_bytes())
    return root


def test_hub_id_resolves_from_the_local_cache_offline(tmp_path, tiny_model_dir, tiny_model, monkeypatch):
    import huggingface_hub.constants as constants

    cache = fake_hub_cache(tmp_path / "hub", "someone/comit-tiny", tiny_model_dir)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = COMiT.from_pretrained("someone/comit-tiny")
    assert_same_model(loaded, tiny_model)
    with pytest.raises(CheckpointError, match="not in the local cache"):
        COMiT.from_pretrained("someone/not-there")


def test_golden_stub_needs_an_autoencoder(tmp_path):
    directory = write_released_checkpoint(tmp_path / "g", golden_tensors(), golden_metadata()["config"])
    with pytest.raises(CheckpointError, match="pass autoencoder="):
        COMiT.from_pretrained(directory)
    assert COMiT.from_pretrained(directory, autoencoder=stub_autoencoder(golden_tensors())).config.image_size == 256


def test_truncated_weights(tmp_path, tiny_model_dir):
    path = tiny_model_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        COMiT.from_pretrained(tiny_model_dir)


def test_config_weights_mismatch(tmp_path, tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["model"]["hidden_size"] = 128
    (tiny_model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match its config"):
        COMiT.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ('{"something": 1}', "neither a COMiT config"),
    ('{"format": "comit", "model": {"hidden_size": "wide"}}', "invalid config value at hidden_size"),
    ('{"format": "comit", "model": {"colour": 3}}', "invalid config value at colour"),
])
def test_bad_config_files(tmp_path, tiny_model_dir, content, message):
    (tiny_model_dir / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        COMiT.from_pretrained(tiny_model_dir)


def test_missing_things(tmp_path):
    with pytest.raises(CheckpointError, match="not a hub id"):
        COMiT.from_pretrained(tmp_path / "nowhere" / "deep")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no config.json"):
        COMiT.from_pretrained(tmp_path / "empty")


def test_save_is_atomic(tmp_path, tiny_model, monkeypatch):
    """A failure while writing leaves the previous checkpoint intact and no temporary files."""
    directory = tiny_model.save_pretrained(tmp_path / "m")
    before = (directory / "model.safetensors").read_bytes()
    import comit.model.checkpoints as checkpoints

    def exploding_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        tiny_model.save_pretrained(directory)
    assert (directory / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_geometry_is_validated():
    with pytest.raises(ValueError, match="multiple of"):
        tiny_config(crop_size=26)
    with pytest.raises(ValueError, match="exceeds"):
        tiny_config(crop_size=72)
    with pytest.raises(ValueError, match="leave gaps"):
        tiny_config(crop_size=16, grid_size=3, image_size=64)


def test_custom_autoencoder_must_fit(tiny_model):
    with pytest.raises(ValueError, match="expects 3 at factor 1"):
        COMiT(tiny_config(), autoencoder=SDVAE())
    with pytest.raises(TypeError, match="lacks"):
        COMiT(tiny_config(), autoencoder=object())
    assert isinstance(COMiT(tiny_config(), autoencoder=PixelAutoencoder()).vae, PixelAutoencoder)
