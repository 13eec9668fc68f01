"""The report of the whole suite (``comit eval all``): each part's headline numbers in one place."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..metrics.registry import headline
from .report import markdown_report, markdown_table, provenance, write_results
from .results import EvalResult
from .run_align import AlignResult, TokenExamples
from .run_crops import CurveResult
from .run_probe import ProbeResult
from .run_recon import ReconResult

# Each kind of part and the result it returns (and writes as its results.json).
RESULT_TYPES: dict[str, type[EvalResult]] = {"recon": ReconResult, "align": AlignResult, "probe": ProbeResult,
                                             "crops": CurveResult, "tokens": TokenExamples}


def read_result(folder: Path, kind: str) -> EvalResult:
    """A part's results read back from ``folder/results.json`` (a finished part of a resumed or
    re-reported experiment); ``kind`` is one of ``RESULT_TYPES``."""
    return RESULT_TYPES[kind].from_json(json.loads((Path(folder) / "results.json").read_text()))


@dataclass
class SuiteResult:
    """``eval all``'s own results: each part's metrics (the crop curves stay in their part's
    report), which parts ran, and the provenance of the whole suite."""

    model: str
    data: str
    parts: dict[str, dict]
    settings: dict
    run: dict

    def to_json(self) -> dict:
        return asdict(self)


def headline_numbers(part: EvalResult) -> dict:
    """The rows a part contributes: its headline metrics, or the size of its crop curves."""
    if isinstance(part, CurveResult):
        return {"points": len(part.rows), "metrics": ", ".join(part.metrics)}
    return {key: part.metrics[key] for key in headline(part.metrics)}


def write_suite_report(out: Path, parts: Mapping[str, EvalResult], model: str, data: str, seconds: float,
                       command: Sequence[str]) -> SuiteResult:
    """OUT/results.json and results.md: each part's headline numbers, time and a link to its report.

    ``parts`` maps each part's name to the result its command returned (the very numbers its
    report shows); ``command`` repeats the whole suite."""
    rows = []
    for name, part in parts.items():
        link = f"[{name}]({name}/results.md)"
        rows += [{"part": link, "metric": k, "value": v} for k, v in headline_numbers(part).items()]
        rows.append({"part": link, "metric": "wall time (s)", "value": part.run["wall_time_s"]})
    results = SuiteResult(model=model, data=data,
                          parts={k: p.metrics for k, p in parts.items() if not isinstance(p, CurveResult)},
                          settings={"parts": list(parts)}, run=provenance(parts["recon"].run["device"], seconds,
                                                                          command))
    data_json = results.to_json()
    markdown = markdown_report("Evaluation suite", data_json, [("Headline numbers", markdown_table(
        rows, ["part", "metric", "value"]))])
    write_results(out, data_json, markdown)
    return results
