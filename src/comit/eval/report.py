"""Writing an evaluation's results: ``results.json`` (machine-readable) and ``results.md`` (for
people), both atomically, plus the run's provenance (command, time, machine, date)."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..io import atomic_write_text
from ..devices import describe_device


def provenance(device: torch.device | str, seconds: float, command: Sequence[str] | None = None) -> dict:
    """Where, when and how a run happened; ``command`` defaults to this process's argv."""
    argv = list(command) if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    device = torch.device(device)
    where = describe_device(device)
    from .. import __version__

    return {"command": shlex.join(argv), "wall_time_s": round(seconds, 2),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": f"{platform.node()}: {where}", "device": str(device),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "comit": __version__}


def json_safe(value):
    """Plain JSON types: tensors become lists/numbers, non-finite floats the strings "inf"/"nan"."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if torch.is_tensor(value):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(out: str | os.PathLike, results: Mapping, markdown: str) -> tuple[Path, Path]:
    """``out/results.json`` and ``out/results.md``, each written to a temporary file and renamed."""
    out = Path(out)
    text = json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n"
    json_path, md_path = out / "results.json", out / "results.md"
    atomic_write_text(json_path, text)
    atomic_write_text(md_path, markdown.rstrip() + "\n")
    return json_path, md_path


def fmt(value, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` significant places, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``columns`` from ``rows`` (missing cells show a dash)."""
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def key_values(mapping: Mapping, title: str | None = None) -> str:
    """A two-column markdown table of a flat mapping (nested values are shown as JSON)."""
    rows = [{"key": k, "value": v if not isinstance(v, (Mapping, list, tuple)) else json.dumps(json_safe(v))}
            for k, v in mapping.items()]
    table = markdown_table(rows, ["key", "value"], [title or "setting", "value"])
    return table


def markdown_report(title: str, results: Mapping, sections: Sequence[tuple[str, str]]) -> str:
    """The common layout: title, the sections given, then settings and provenance."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    if results.get("notes"):
        parts += ["## Notes", ""] + [f"- {note}" for note in results["notes"]] + [""]
    parts += ["## Settings", "", key_values({"model": results.get("model"), "data": results.get("data"),
                                              **results.get("settings", {})}), ""]
    run = results.get("run", {})
    if run:
        parts += ["## Run", "", key_values(run, "run"), ""]
    return "\n".join(parts)
