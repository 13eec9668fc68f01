"""Files: atomic, durable writes, and versioned checkpoint configs read with one-line errors.

Writes: readers never see a half-written file, a failed write leaves nothing.

What a write through here guarantees: the content goes to a temporary file beside the target, is
flushed to the disk (``fsync``), gets the mode a plain ``open`` would give (0666 less the umask),
and is renamed onto the target in one step; the folder is then flushed too, so after a power loss
the target holds either the old or the new content, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: Path) -> None:
    """Flush a file's content, or a folder's entries, to the disk (folders: where they can be
    opened; Windows cannot, and its renames need no folder flush)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        if Path(path).is_dir():
            return
        raise
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def publish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` (a file, or a folder of files) the usual modes, flush it, rename it onto ``path``."""
    tmp, path = Path(tmp), Path(path)
    mask = current_umask()
    if tmp.is_dir():
        for child in tmp.iterdir():
            os.chmod(child, 0o666 & ~mask)
            fsync_path(child)
        os.chmod(tmp, 0o777 & ~mask)
    else:
        os.chmod(tmp, 0o666 & ~mask)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then publish it as ``path`` (see the module's guarantees)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """``path`` holds ``text`` (UTF-8), written as :func:`atomic_write` writes."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: Path, data, indent: int | None = 2) -> None:
    """``path`` holds ``data`` as JSON and a final newline, written as :func:`atomic_write` writes."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


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
