"""Conformance to the released code's outputs (tests/data/golden-visible.safetensors).

The model is loaded the way a user's download is: a released-layout directory through
COMiT.from_pretrained. Continuous values must agree to 1e-4, token ids on >= 99% of positions.
"""

import pytest
import torch

from comit import COMiT

from golden import (copy_official_saved, golden_metadata, golden_tensors, stub_autoencoder,
                    write_released_checkpoint)

ATOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return golden_tensors()


@pytest.fixture(scope="module")
def meta():
    return golden_metadata()


@pytest.fixture(scope="module", params=["written", "official-saved"])
def model(request, golden, meta, tmp_path_factory):
    """Both the released layout we write from the golden weights and the directory the released
    code's own save_pretrained produced."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "written":
        directory = write_released_checkpoint(root / "ckpt", golden, meta["config"])
    else:
        directory = copy_official_saved(root / "ckpt")
    return COMiT.from_pretrained(directory, autoencoder=stub_autoencoder(golden))


def test_released_layout_picks_released_attention(model):
    assert model.config.attention == "released"
    assert model.config.image_size == 256 and model.config.crop_size == 96 and model.config.grid_size == 3


@pytest.mark.parametrize("mode,prefix", [("released", "predictor_call"), ("hard", "predictor_call_hard_mask")])
def test_predictor_call(model, golden, mode, prefix):
    predictor = model.predictor
    predictor.attention = mode
    try:
        with torch.no_grad():
            out = predictor(golden["predictor_call.x"], golden["predictor_call.t"], golden["predictor_call.r"],
                            golden["predictor_call.c"])
    finally:
        predictor.attention = "released"
    torch.testing.assert_close(out.velocity, golden[f"{prefix}.out_velocity"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.message, golden[f"{prefix}.out_message_raw"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.offset, golden[f"{prefix}.out_offset"], atol=ATOL, rtol=0)
    if mode == "released":
        b, n, h = out.patch_states.shape
        grid = int(n ** 0.5)
        representation = out.patch_states.transpose(1, 2).reshape(b, h, grid, grid)
        torch.testing.assert_close(representation, golden["predictor_call.out_representation"], atol=ATOL, rtol=0)
        torch.testing.assert_close(out.message_states, golden["predictor_call.out_representation_message"],
                                   atol=ATOL, rtol=0)


def tokenize_cases():
    return [case for case in golden_metadata()["cases"] if "case" in case]


@pytest.mark.parametrize("case", tokenize_cases(), ids=lambda c: f"case{c['case']}-{c['order']}")
def test_tokenize(model, golden, case):
    n = case["case"]
    tokens = model.tokenize(golden["input.images"], global_crop=case["global_crop"], order=case["order"],
                            num_crops=case["num_crops"], noise=golden["adaptive.noise"])
    torch.testing.assert_close(tokens.messages, golden[f"case{n}.msgs"], atol=ATOL, rtol=0)
    torch.testing.assert_close(tokens.offsets, golden[f"case{n}.offsets"], atol=ATOL, rtol=0)
    agreement = (tokens.ids == golden[f"case{n}.token_ids"]).float().mean().item()
    assert agreement >= 0.99
    if f"case{n}.crop_order" in golden:
        assert torch.equal(tokens.crop_order, golden[f"case{n}.crop_order"])


def detokenize_cases():
    return [case for case in golden_metadata()["cases"] if "detok" in case]


@pytest.mark.parametrize("case", detokenize_cases(), ids=lambda c: f"detok{c['detok']}")
def test_detokenize(model, golden, case):
    source = case["from"]
    latents = model.detokenize(golden[f"{source}.msgs"], golden[f"{source}.offsets"], num_steps=case["num_steps"],
                               solver=case["solver"], cfg_weight=case["cfg_weight"],
                               apg_momentum=case["apg_momentum"], noise=golden["detok.noise"], decode=case["decode"])
    torch.testing.assert_close(latents, golden[f"detok{case['detok']}.latent"], atol=ATOL, rtol=0)


def test_detokenize_accepts_token_ids(model, golden):
    from_codes = model.detokenize(golden["case0.msgs"], golden["case0.offsets"], num_steps=1, cfg_weight=1.0,
                                  noise=golden["detok.noise"], decode=False)
    from_ids = model.detokenize(golden["case0.token_ids"], golden["case0.offsets"], num_steps=1, cfg_weight=1.0,
                                noise=golden["detok.noise"], decode=False)
    torch.testing.assert_close(from_ids, from_codes)
