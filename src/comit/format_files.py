"""The JSON config of a checkpoint folder that carries its format name and version (the conv
autoencoder, the shapes teacher): read with one-line errors that say what the folder should be."""

from __future__ import annotations

import json
from pathlib import Path


def read_format_json(directory: Path, file_name: str, format_name: str, max_version: int,
                     error: type[Exception], what: str) -> dict:
    """The parsed ``directory/file_name``, checked to be a ``format_name`` config this comit can read
    (``format_version`` <= ``max_version``); anything else raises ``error`` naming ``what``
    ("an autoencoder")."""
    path = directory / file_name
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{directory} holds no {file_name}; is it {what} folder?") from None
    except (ValueError, UnicodeDecodeError) as problem:
        raise error(f"{path} is not valid JSON: {problem}") from problem
    if not isinstance(raw, dict) or raw.get("format") != format_name:
        raise error(f"{path} is not {what} config (format {format_name!r} expected)")
    if raw.get("format_version", 0) > max_version:
        raise error(f"{path} has format_version {raw['format_version']}; this comit reads up to "
                    f"{max_version}, upgrade comit")
    return raw
