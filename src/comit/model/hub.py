"""Sharing a saved model on the Hugging Face hub: ``comit push DIR REPO`` and ``comit train --push-to-hub``.

``COMiT.push_to_hub`` (huggingface_hub's mixin) saves a model in memory and uploads it; this
uploads a folder as it is on disk (e.g. the float16 bundled model, or a run's ``model/``), after
checking that it loads and giving it a model card if it has none.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

from .checkpoints import (CONFIG_NAME, PROVENANCE_NAME, WEIGHTS_NAME, CheckpointError, read_config,
                          read_provenance, resolve_checkpoint)
from .model_card import MODEL_CARD_NAME, model_card, save_card


def write_model_card(directory: Path, repo_id: str | None = None, metrics: dict | None = None) -> Path:
    """Give a saved model folder a ``README.md`` card from its config and provenance (kept if one is there)."""
    directory = Path(directory)
    config, _ = read_config(directory)
    return save_card(directory, model_card(config, provenance=read_provenance(directory), metrics=metrics,
                                           repo_id=repo_id))


def check_can_upload() -> None:
    """Refuse an upload that cannot happen before any work (``comit train --push-to-hub``) or file is written."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise CheckpointError("HF_HUB_OFFLINE is set, so nothing can be uploaded to the hub; unset it (and log in "
                              "with `huggingface-cli login`) to push, or drop the push")


def push_folder(name_or_path: str | Path, repo_id: str, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload COMiT model") -> str:
    """Upload a saved model folder (or ``bundled``) to ``repo_id``; returns the commit URL."""
    check_can_upload()
    directory = resolve_checkpoint(name_or_path)
    if not (directory / CONFIG_NAME).is_file():
        raise CheckpointError(f"{directory} holds no {CONFIG_NAME}: give a folder written by save_pretrained or comit train")
    read_config(directory)  # a folder that would not load is not uploaded
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    write_model_card(directory, repo_id=repo_id)  # only once the hub answered: a failed push leaves the folder as it was
    info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=directory, commit_message=commit_message,
                             allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME, PROVENANCE_NAME])
    return str(getattr(info, "commit_url", info))
