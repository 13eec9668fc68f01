"""``comit info`` and ``comit push``: a model's configuration, and uploading it to the hub."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from .options import DEFAULT_MODEL, ModelOption, RevisionOption
from .support import friendly_errors, load_model


def register(app: typer.Typer) -> None:
    for command in (info, push):
        app.command()(command)


@friendly_errors
def info(model: ModelOption = DEFAULT_MODEL, revision: RevisionOption = None):
    """Print a model's configuration and size."""
    from ..model.transformer import count_parameters

    net = load_model(model, revision=revision)
    summary = {"model": model, "parameters": count_parameters(net.predictor), "codebook_size": net.codebook_size,
               **net.config.model_dump()}
    typer.echo(json.dumps(summary, indent=2))


@friendly_errors
def push(model: Annotated[str, typer.Argument(help="A saved model folder (from comit train or save_pretrained), or 'bundled'.")],
         repo_id: Annotated[str, typer.Argument(help="Hub repository, owner/name (created if missing).")],
         private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
         token: Annotated[Optional[str], typer.Option("--token", help="Hub token (default: huggingface-cli login's).")] = None,
         message: Annotated[str, typer.Option("--message", help="Commit message.")] = "Upload COMiT model"):
    """Upload a saved model to the Hugging Face hub, with a model card if it has none."""
    from ..model.hub import push_folder

    typer.echo(f"pushed {model} to {repo_id}: {push_folder(model, repo_id, private=private or None, token=token, commit_message=message)}")
