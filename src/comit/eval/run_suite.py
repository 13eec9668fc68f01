"""The report of the whole suite (``comit eval all``): each part's headline numbers in one place."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .report import markdown_report, markdown_table, provenance, write_results

HEADLINE = {"recon": ["psnr", "ssim", "rfid", "codebook_perplexity"],
            "align": ["miou_image", "miou_object", "random_miou_image", "random_miou_object"]}


def write_suite_report(out: Path, parts: dict, model: str, data: str, seconds: float,
                       command: Sequence[str]) -> dict:
    """OUT/results.json and results.md: each part's headline numbers, time and a link to its report.

    ``parts`` maps each part's name to its ``results.json``; ``command`` repeats the whole suite."""
    rows = []
    for name, part in parts.items():
        metrics = part.get("metrics", {})
        if name == "crops":
            values = {"points": len(part["rows"]), "metrics": ", ".join(metrics)}
        else:
            values = {k: metrics[k] for k in HEADLINE.get(name, metrics) if k in metrics}
        rows += [{"part": f"[{name}]({name}/results.md)", "metric": k, "value": v} for k, v in values.items()]
        rows.append({"part": f"[{name}]({name}/results.md)", "metric": "wall time (s)",
                     "value": part["run"]["wall_time_s"]})
    device = parts["recon"]["run"]["device"]
    results = {"model": model, "data": data,
               "parts": {k: p["metrics"] for k, p in parts.items() if k != "crops"}, "settings": {"parts": list(parts)},
               "run": provenance(device, seconds, command)}
    markdown = markdown_report("Evaluation suite", results, [("Headline numbers", markdown_table(
        rows, ["part", "metric", "value"]))])
    write_results(out, results, markdown)
    return results
