"""The model card (``README.md``) that ``save_pretrained`` and ``push_to_hub`` write beside a model.

The hub reads its YAML header (library, tags, licence, the paper's arXiv id) to list and link the
model; the body says what the model is, how it was trained and what it measured, from what the
caller knows: ``provenance`` (the fields of a run's ``provenance.json``: command, steps, data,
hardware, date) and ``metrics`` (name -> value, e.g. from ``comit eval``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ..io import atomic_write
from .config import ModelConfig

MODEL_CARD_NAME = "README.md"

LIBRARY_NAME = "comit"
ARXIV_ID = "2602.20731"
PAPER_URL = f"https://arxiv.org/abs/{ARXIV_ID}"
TAGS = ("comit", "image-tokenizer", "discrete-tokens", "flow-matching", f"arxiv:{ARXIV_ID}")
# Models this library trains are Apache-2.0 like the code; the released checkpoints are not (pass
# license= for a model fine-tuned from them).
DEFAULT_LICENSE = "apache-2.0"
# Provenance fields shown in the card's training table, in this order, with their labels.
PROVENANCE_ROWS = (("command", "command"), ("steps", "optimiser steps"), ("images_seen", "training images seen"),
                   ("data", "data"), ("wall_time_minutes", "wall time (minutes)"), ("machine", "hardware"),
                   ("precision", "precision"), ("date", "date"), ("weights", "weights"))


def model_card(config: ModelConfig, provenance: Mapping[str, Any] | None = None,
               metrics: Mapping[str, float] | None = None, license: str = DEFAULT_LICENSE,
               repo_id: str | None = None) -> ModelCard:
    """The card for a model with ``config``; unknown training or metrics are said to be unknown."""
    data = ModelCardData(library_name=LIBRARY_NAME, license=license, tags=list(TAGS), pipeline_tag="image-to-image")
    name = repo_id or "A COMiT tokenizer"
    body = [f"# {name}", "",
            f"A [COMiT]({PAPER_URL}) image tokenizer (Communication-Inspired Tokenization, arXiv {ARXIV_ID}): "
            "it reads an image crop by crop and rewrites a fixed budget of discrete tokens after each crop; "
            "the same transformer paints the image back from the tokens by flow matching. "
            "Made with the `comit` library (`pip install comit`).", "",
            "```python", "from comit import COMiT", "",
            f"model = COMiT.from_pretrained({(repo_id or 'PATH')!r})",
            "tokens = model.tokenize(images, order=\"adaptive\", num_crops=3)   # images in [-1, 1]",
            "images = model.detokenize(tokens.messages, tokens.offsets)", "```", "",
            "## Model", "", *architecture_rows(config), "",
            "## Training", "", *provenance_rows(provenance), "",
            "## Measured", "", *metric_rows(metrics), "",
            "## Citation", "", "```bibtex", "@article{comit2026,",
            "  title   = {Communication-Inspired Tokenization},", f"  journal = {{arXiv:{ARXIV_ID}}},",
            "  year    = {2026}", "}", "```"]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def architecture_rows(config: ModelConfig) -> list[str]:
    tokens = config.num_msg_tokens
    codes = 1
    for level in config.fsq_levels:
        codes *= level
    return ["| | |", "|---|---|",
            f"| transformer | width {config.hidden_size}, depth {config.depth}, {config.num_heads} heads, "
            f"patch {config.patch_size} |",
            f"| message | {tokens} tokens, FSQ levels {list(config.fsq_levels)} ({codes:,} codes) |",
            f"| images | {config.image_size} px; {config.grid_size}x{config.grid_size} local crops of "
            f"{config.crop_size} px and the global crop |",
            f"| autoencoder | {config.autoencoder.kind} |",
            f"| predicts | {config.prediction} |"]


def provenance_rows(provenance: Mapping[str, Any] | None) -> list[str]:
    if not provenance:
        return ["Not recorded: this model was saved without its training provenance."]
    rows = ["| | |", "|---|---|"]
    rows += [f"| {label} | {format_value(provenance[key])} |" for key, label in PROVENANCE_ROWS if key in provenance]
    return rows


def metric_rows(metrics: Mapping[str, float] | None) -> list[str]:
    if not metrics:
        return ["No metrics recorded; `comit eval all --model PATH` measures them."]
    return ["| metric | value |", "|---|---|", *(f"| {name} | {format_value(value)} |" for name, value in metrics.items())]


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def save_card(directory: Path, card: ModelCard) -> Path:
    """Write ``README.md`` atomically unless the folder has one (a card edited by hand is kept)."""
    path = Path(directory) / MODEL_CARD_NAME
    if not path.exists():
        atomic_write(path, lambda tmp: Path(tmp).write_text(str(card)))
    return path
