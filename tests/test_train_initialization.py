"""Training-time initialisation of the message/query stream (config section ``init``)."""

import pytest
import torch

from comit.model.comit import COMiT
from comit.train.config import ConfigError, InitConfig, load_config
from comit.train.initialization import initialize_message_stream
from comit.train.loop import build_model

from conftest import tiny_config


def _gates(block):
    chunks = block.r_adaLN_modulation[-1].bias.view(6, -1)
    return chunks[2], chunks[5]


def test_defaults_keep_dit_zero_gates_and_the_released_embedding_scale():
    """InitConfig's message_embed_std defaults to 1.0 (the released code's), no longer ViT's 0.02."""
    assert InitConfig().message_embed_std == 1.0
    torch.manual_seed(0)
    model = COMiT(tiny_config())
    initialize_message_stream(model.predictor, InitConfig())
    for block in model.predictor.blocks:
        assert all(torch.equal(gate, torch.zeros_like(gate)) for gate in _gates(block))
        assert torch.equal(block.x_adaLN_modulation[-1].bias, torch.zeros_like(block.x_adaLN_modulation[-1].bias))
    assert 0.8 < float(model.predictor.r_to_pos_embed.detach().std()) < 1.2


def test_open_message_gates_and_wide_embeddings():
    torch.manual_seed(0)
    model = COMiT(tiny_config())
    initialize_message_stream(model.predictor, InitConfig(message_gate=1.0, message_embed_std=1.0))
    for block in model.predictor.blocks:
        assert all(torch.equal(gate, torch.ones_like(gate)) for gate in _gates(block))
        shifts = block.r_adaLN_modulation[-1].bias.view(6, -1)[[0, 1, 3, 4]]
        assert torch.equal(shifts, torch.zeros_like(shifts)), "only the gates move"
        image_stream = block.x_adaLN_modulation[-1].bias
        assert torch.equal(image_stream, torch.zeros_like(image_stream)), "the image stream keeps DiT's init"
    assert 0.8 < float(model.predictor.r_to_pos_embed.detach().std()) < 1.2


def test_training_config_reaches_the_fresh_model():
    config = load_config("tiny", ["message_gate=0.5", "init.message_embed_std=0.5"])
    model = build_model(config)
    assert all(float(_gates(block)[0].detach().mean()) == 0.5 for block in model.predictor.blocks)


def test_open_patch_gates():
    """init.patch_gate opens the image stream's gates (DiT: 0), so the decoder's output depends on
    the message from the first step; the message stream is left as configured."""
    torch.manual_seed(0)
    model = COMiT(tiny_config())
    initialize_message_stream(model.predictor, InitConfig(patch_gate=1.0))
    for block in model.predictor.blocks:
        chunks = block.x_adaLN_modulation[-1].bias.view(6, -1)
        assert torch.equal(chunks[2], torch.ones_like(chunks[2])) and torch.equal(chunks[5], torch.ones_like(chunks[5]))
        assert torch.equal(chunks[[0, 1, 3, 4]], torch.zeros_like(chunks[[0, 1, 3, 4]]))
        assert all(torch.equal(gate, torch.zeros_like(gate)) for gate in _gates(block))


def test_grid_message_positions_start_where_the_patches_are():
    """init.message_positions=grid: message and query position i start as patch i's sin-cos vector
    (scaled to message_embed_std), and needs one message token per patch."""
    model = COMiT(tiny_config(num_msg_tokens=256))  # 64 px, patch 4: 16x16 patches
    initialize_message_stream(model.predictor, InitConfig(message_positions="grid", message_embed_std=1.0))
    table = model.predictor.pos_embed.detach()
    for param in (model.predictor.r_pos_embed, model.predictor.r_to_pos_embed):
        assert torch.allclose(param.detach(), table / table.std())
        assert abs(float(param.detach().std()) - 1.0) < 1e-4
    import pytest

    from comit.train.config import ConfigError

    with pytest.raises(ConfigError, match="one message token per patch"):
        initialize_message_stream(COMiT(tiny_config()).predictor, InitConfig(message_positions="grid"))


def test_tied_query_key_starts_attention_as_similarity():
    """init.query_key=tied: each block's key projection starts equal to its query projection, both
    scaled by query_key_scale; values and biases are left alone."""
    torch.manual_seed(0)
    model = COMiT(tiny_config())
    before = [block.attn.qkv.weight.detach().clone() for block in model.predictor.blocks]
    initialize_message_stream(model.predictor, InitConfig(query_key="tied", query_key_scale=2.0))
    for block, old in zip(model.predictor.blocks, before):
        weight, width = block.attn.qkv.weight.detach(), old.shape[1]
        assert torch.equal(weight[:width], weight[width:2 * width])
        assert torch.allclose(weight[:width], 2.0 * old[:width])
        assert torch.equal(weight[2 * width:], old[2 * width:])


def test_fine_tuning_starts_from_the_saved_transformer(tmp_path):
    saved = build_model(load_config("tiny", ["message_gate=0.5"]))
    with torch.no_grad():
        for param in saved.predictor.parameters():
            param.add_(0.01)
    saved.save_pretrained(tmp_path / "saved")
    tuned = build_model(load_config("tiny", [f"init.weights={tmp_path / 'saved'}"]))
    for (name, want), got in zip(saved.predictor.state_dict().items(), tuned.predictor.state_dict().values()):
        assert torch.equal(want, got), name
    fresh = build_model(load_config("tiny"))
    assert not torch.equal(fresh.predictor.blocks[0].attn.qkv.weight, tuned.predictor.blocks[0].attn.qkv.weight)


def test_fine_tuning_refuses_another_architecture(tmp_path):
    build_model(load_config("tiny")).save_pretrained(tmp_path / "saved")
    with pytest.raises(ConfigError, match=r"another architecture than model \(depth 2 != 3"):
        build_model(load_config("tiny", [f"init.weights={tmp_path / 'saved'}", "model.depth=3"]))


def test_fine_tuning_may_move_local_crops_to_their_places(tmp_path):
    """Crop patch positions hold no weights: a top_left model fine-tunes into an absolute one
    (shapes-latent-local on shapes-latent), and the new model keeps the new positions."""
    build_model(load_config("tiny")).save_pretrained(tmp_path / "saved")
    tuned = build_model(load_config("tiny", [f"init.weights={tmp_path / 'saved'}",
                                             "model.crop_patch_positions=absolute"]))
    assert tuned.config.crop_patch_positions == "absolute"
    assert tuned.predictor.crop_patch_positions == "absolute"


def test_fine_tuning_may_make_writes_local(tmp_path):
    """Which tokens a write keeps holds no weights: a paper-write model fine-tunes into a local-write
    one (shapes-latent-write on shapes-latent-gpu) with every weight carried over."""
    source = build_model(load_config("tiny"))
    source.save_pretrained(tmp_path / "saved")
    tuned = build_model(load_config("tiny", [f"init.weights={tmp_path / 'saved'}", "model.message_write=local"]))
    assert tuned.config.message_write == "local"
    for (name, before), after in zip(source.predictor.state_dict().items(), tuned.predictor.state_dict().values()):
        assert torch.equal(before, after), name
