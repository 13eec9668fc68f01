"""Numbers users set through environment variables, read with one-line errors."""

from __future__ import annotations

import os
from collections.abc import Callable


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
