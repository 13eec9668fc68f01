"""Item positions every data source checks the same way."""

from __future__ import annotations


def checked_index(index: int, length: int, holder: str) -> int:
    """``index`` as a position in ``[0, length)`` (negative counts from the end, as in a list); an
    IndexError that names ``holder`` ("images in photos/") otherwise."""
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for {length} {holder}")
    return int(index) % length
