"""Training-time initialisation choices for a fresh model (``init`` section of the config).

The model itself starts as DiT does (``Transformer.initialize_weights``); these knobs change only
the message/query stream, whose all-zero gates make every image write the same message at first
(see ``InitConfig`` and docs/training.md).
"""

from __future__ import annotations

import torch

from ..model.checkpoints import (WEIGHTS_NAME, check_predictor_shapes, read_config, read_weight_shapes,
                                 read_weights, resolve_checkpoint)
from ..model.config import ModelConfig
from ..model.transformer import Transformer
from .config import ConfigError, InitConfig

# Chunk order of a block's adaLN output: shift, scale, gate (attention), shift, scale, gate (MLP).
GATE_CHUNKS = (2, 5)
NUM_CHUNKS = 6


@torch.no_grad()
def initialize_message_stream(predictor: Transformer, init: InitConfig) -> None:
    """Set the gate biases of both streams and the message stream's learned-vector scale as ``init`` says."""
    for param in (predictor.r_pos_embed, predictor.r_to_token, predictor.r_to_pos_embed):
        param.normal_(0.0, init.message_embed_std)
    if init.message_positions == "grid":
        grid = predictor.grid_size
        if predictor.num_msg_tokens != grid * grid:
            raise ConfigError(f"init.message_positions=grid needs one message token per patch: num_msg_tokens "
                              f"{predictor.num_msg_tokens} != {grid}x{grid} patches")
        # Token i starts where patch i is: attention can copy locally from the first step.
        table = predictor.pos_embed.detach()
        for param in (predictor.r_pos_embed, predictor.r_to_pos_embed):
            param.copy_(table * (init.message_embed_std / table.std()))
    if init.query_key == "tied":
        for block in predictor.blocks:
            qkv = block.attn.qkv.weight
            width = qkv.shape[1]
            qkv[width:2 * width].copy_(qkv[:width])  # key = query: attention starts as similarity
            qkv[:2 * width].mul_(init.query_key_scale)
    for block in predictor.blocks:
        for modulation, gate in ((block.r_adaLN_modulation, init.message_gate), (block.x_adaLN_modulation, init.patch_gate)):
            bias = modulation[-1].bias.view(NUM_CHUNKS, -1)
            for chunk in GATE_CHUNKS:
                bias[chunk] = gate


# Fields that do not shape the transformer: the autoencoder is built from the config's own entry,
# the attention kernel is a runtime choice, where a crop's patches sit in the fixed position table
# and which tokens a write keeps hold no weights (a fine-tune may move local crops to their places
# or make writes local: docs/training.md).
NOT_ARCHITECTURE = {"autoencoder", "attention", "crop_patch_positions", "message_write"}


@torch.no_grad()
def start_from_weights(predictor: Transformer, config: ModelConfig, name_or_path: str) -> None:
    """Copy a saved model's transformer into ``predictor`` (fine-tuning); its architecture must be ``config``'s."""
    directory = resolve_checkpoint(name_or_path)
    saved, _ = read_config(directory)
    differing = [name for name, value in config.model_dump(exclude=NOT_ARCHITECTURE).items()
                 if saved.model_dump(exclude=NOT_ARCHITECTURE).get(name) != value]
    if differing:
        shown = ", ".join(f"{name} {getattr(saved, name)} != {getattr(config, name)}" for name in differing[:3])
        raise ConfigError(f"init.weights={name_or_path} has another architecture than model ({shown}); "
                          "fine-tune with the same model section it was trained with")
    check_predictor_shapes(config, read_weight_shapes(directory / WEIGHTS_NAME))
    weights = read_weights(directory / WEIGHTS_NAME)
    predictor.load_state_dict({k[len("predictor."):]: v for k, v in weights.items() if k.startswith("predictor.")})
