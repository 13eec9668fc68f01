"""What users set — numbers through environment variables, configs validated by pydantic — read
with one-line errors."""

from __future__ import annotations

import os
from collections.abc import Callable

from pydantic import ValidationError


def env_number(name: str, default: float, parse: Callable[[str], float], what: str) -> float:
    """``os.environ[name]`` parsed with ``parse`` (``int`` or ``float``), ``default`` when unset;
    ``what`` names the unit in the error ("a whole number of pixels"). Zero and below are refused."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = parse(text)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {text!r}")
    return value


def first_error(error: ValidationError) -> tuple[str, str]:
    """``(dotted location, message)`` of the first error; the location is "" at the top level."""
    first = error.errors()[0]
    return ".".join(str(part) for part in first["loc"]), first["msg"]
