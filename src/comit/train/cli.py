"""``comit train`` and ``python -m comit.train``: parse [CONFIG] [key=value ...], then train."""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import ResumeError
from .config import ConfigError, DEFAULT_CONFIG


def split_arguments(args: list[str]) -> tuple[str | None, list[str]]:
    """The first argument without '=' is the config; the rest must be key=value overrides."""
    config = None
    overrides = []
    for arg in args:
        if "=" in arg:
            overrides.append(arg)
        elif config is None and not overrides:
            config = arg
        else:
            raise ConfigError(f"unexpected argument {arg!r}: give [CONFIG] then key=value overrides")
    return config, overrides


def run_training(args: list[str], out: Path | None, resume: bool, push_to_hub: str | None = None) -> Path:
    from .loop import prepare_run, train

    config_name, overrides = split_arguments(args)
    if out is None:
        if resume:
            raise ResumeError("--resume needs --out: the folder of the run to continue")
        out = Path("runs") / Path(config_name or DEFAULT_CONFIG).stem
    config = prepare_run(config_name, out, resume, overrides)
    model_dir = train(config, out, resume=resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained model: {model_dir}  (COMiT.from_pretrained({str(model_dir)!r}))", flush=True)
        if push_to_hub:
            from ..model.hub import push_folder

            print(f"pushed to {push_to_hub}: {push_folder(model_dir, push_to_hub)}", flush=True)
    return model_dir
