"""What every `comit` sub-command shares besides its options: one-line errors, the range check of
numeric options, model loading and the crop-order syntax.

A module of its own (like ``options``), imported by each command group, so that none of them
imports another or ``app``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from functools import wraps

import click
import typer

from .options import DEFAULT_NUM_CROPS

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, TypeError, KeyError)

# The range of each numeric option, by parameter name, for every command that has it: checked here,
# before the command runs, so that no command meets a 0 batch or an infinite size.
AT_LEAST_ONE = ("batch_size", "batch", "steps", "num_crops", "epochs", "repeats",
                "top_tokens", "image_size", "latent_channels", "width", "shard_size")
AT_LEAST_ZERO = ("patience", "warmup", "threads", "seed", "lr", "latent_noise", "num_workers",
                 "num_images", "num_train", "crop_images")  # eval's image counts: 0 means all
POSITIVE = ("max_upload_mb",)
FRACTION = ("holdout_fraction",)


def option_name(parameter: str) -> str:
    return "--" + parameter.replace("_", "-")


def check_options(values: dict) -> None:
    """Refuse NaN/Inf in any numeric option, and values outside the ranges above."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{option_name(name)} must be a finite number, got {value}")
        if name in AT_LEAST_ONE and value < 1:
            raise ValueError(f"{option_name(name)} must be >= 1, got {value}")
        if name in AT_LEAST_ZERO and value < 0:
            raise ValueError(f"{option_name(name)} must be >= 0, got {value}")
        if name in POSITIVE and value <= 0:
            raise ValueError(f"{option_name(name)} must be > 0, got {value}")
        if name in FRACTION and not 0 < value < 1:
            raise ValueError(f"{option_name(name)} must lie strictly between 0 and 1, got {value}")


def friendly_errors(command: Callable) -> Callable:
    """Bad input prints one line and exits 1, never a traceback (COMIT_DEBUG=1 shows it).

    Expected failures print their own message; anything unforeseen prints its type and message with
    the numeric options it ran with (where such failures come from), and asks to be reported.
    """

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            check_options(kwargs)
            with warnings.catch_warnings():
                warnings.showwarning = show_warning
                return command(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except EXPECTED_ERRORS as error:
            fail(error, str(error).splitlines()[0] if str(error) else type(error).__name__)
        except Exception as error:  # noqa: BLE001 - the one place that turns surprises into one line
            numeric = " ".join(f"{option_name(k)}={v}" for k, v in kwargs.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool))
            text = str(error).splitlines()[0] if str(error) else ""
            fail(error, f"unexpected {type(error).__name__}{': ' + text if text else ''}"
                        f"{f' (options: {numeric})' if numeric else ''}; please report it")

    return wrapper


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line are one line each, like the errors."""
    typer.secho(f"warning: {str(message).splitlines()[0]}", err=True, fg=typer.colors.YELLOW)


def fail(error: BaseException, message: str):
    if os.environ.get("COMIT_DEBUG"):
        raise error
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1) from None


def load_model(name: str, device: str = "auto", revision: str | None = None):
    import torch

    from ..devices import resolve_device
    from ..model.comit import COMiT

    torch.set_flush_denormal(True)
    return COMiT.from_pretrained(name, device=resolve_device(device), revision=revision)


def resolved_num_crops(order, num_crops: int | None) -> int:
    """What --num-crops means when left out: 3 crops for a named order, every crop of a list."""
    if num_crops is not None:
        return num_crops
    return DEFAULT_NUM_CROPS if isinstance(order, str) else len(order)


def parse_order(order: str):
    """'adaptive' stays a name; '4,1,7' becomes a list of crop indices. An unknown name fails here,
    before any model loads."""
    from ..model.policy_names import check_policy_name

    order = order.strip()
    if "," in order or order.isdigit():
        try:
            return [int(part) for part in order.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"--order {order!r}: a list must be comma-separated integers, e.g. 4,1,7") from None
    return check_policy_name(order)
