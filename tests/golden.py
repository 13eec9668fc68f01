"""Helpers for the conformance tests against the released code's golden outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden-visible.safetensors"
OFFICIAL_SAVED = DATA / "official-saved-visible"


def golden_tensors() -> dict[str, torch.Tensor]:
    return load_file(str(GOLDEN))


def golden_metadata() -> dict:
    with safe_open(str(GOLDEN), "pt") as handle:
        meta = handle.metadata()
    return {"config": json.loads(meta["config"]), "cases": json.loads(meta["cases"])}


class StubAutoencoder(nn.Module):
    """The reference data's stand-in for the SD-VAE: an 8x average pool and a 3->4 linear map."""

    downsample = 8
    latent_channels = 4

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", bias.clone())

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(images, 8)
        return torch.einsum("oc,bchw->bohw", self.weight, pooled) + self.bias[None, :, None, None]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        centred = latents - self.bias[None, :, None, None]
        pixels = torch.einsum("co,bohw->bchw", torch.linalg.pinv(self.weight), centred)
        return F.interpolate(pixels, scale_factor=8, mode="nearest")


def stub_autoencoder(tensors: dict[str, torch.Tensor]) -> StubAutoencoder:
    return StubAutoencoder(tensors["stub_ae.W"], tensors["stub_ae.b"])


def write_released_checkpoint(directory: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """The golden model as a user's download would look: released config.json + model.safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    released = {
        "predictor": {"_target_": "comit.components.predictor.dit.RuledDiT",
                      **{k: config[k] for k in ("hidden_size", "depth", "num_heads", "num_msg_tokens",
                                                  "msg_tokens_dim", "patch_size", "max_input_size",
                                                  "in_channels", "representation_layer", "mlp_ratio")},
                      "out_channels": config["in_channels"]},
        "quantizer": {"_target_": "comit.components.quantizer.fsq.FSQ", "levels": config["fsq_levels"]},
        "vae": {"_target_": "stubae.StubAE", "channels": config["in_channels"]},
    }
    (directory / "config.json").write_text(json.dumps(released, indent=2))
    weights = {k[len("model."):]: v.contiguous() for k, v in tensors.items() if k.startswith("model.predictor.")}
    weights["vae.W"] = tensors["stub_ae.W"].contiguous()
    weights["vae.b"] = tensors["stub_ae.b"].contiguous()
    save_file(weights, str(directory / "model.safetensors"))
    return directory


def copy_official_saved(directory: Path) -> Path:
    shutil.copytree(OFFICIAL_SAVED, directory)
    return directory
