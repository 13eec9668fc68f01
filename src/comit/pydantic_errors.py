"""One line from a pydantic ValidationError: where the first problem is, and what it is."""

from __future__ import annotations

from pydantic import ValidationError


def first_error(error: ValidationError) -> tuple[str, str]:
    """``(dotted location, message)`` of the first error; the location is "" at the top level."""
    first = error.errors()[0]
    return ".".join(str(part) for part in first["loc"]), first["msg"]
