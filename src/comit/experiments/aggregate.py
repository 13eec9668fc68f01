"""From the per-unit evaluation results to tables over seeds: arms, crop curves and claims.

Everything is read back from the ``results.json`` files the runner wrote, so the tables can be
rebuilt at any time (also from a stopped experiment: units not yet evaluated are simply absent,
and ``n`` in every cell says how many seeds it holds).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .config import ClaimConfig, ExperimentConfig
from .runner import UNIT_FILE, Unit, units
from .statistics import Estimate, mean_ci, paired_difference

CURVE_KEYS = ("policy", "order", "global_crop", "num_crops")


@dataclass(frozen=True)
class Metric:
    """A number of one evaluation part: ``part/key``, how to call it, and its chance floor."""

    part: str
    key: str
    label: str
    floor: str | None = None  # alignment: the random-map key; probes: "majority"
    higher_is_better: bool = True

    @property
    def name(self) -> str:
        return f"{self.part}/{self.key}"


PROBE_METRICS = (("semantic_top1", "semantic probe top-1"),
                 ("compositional_unseen_pairs_top5", "compositional probe top-5, unseen pairs"),
                 ("compositional_seen_pairs_top5", "compositional probe top-5, seen pairs"),
                 ("relational_top1", "relational probe top-1"))


def arm_metrics(config: ExperimentConfig) -> list[Metric]:
    """The rows of the arm table, in the order they are shown."""
    policies = list(config.eval.policies)
    rows = []
    for policy in policies:
        rows += [Metric(f"align-{policy}", "miou_image", f"token–object mIoU per image [{policy}]", "random_miou_image"),
                 Metric(f"align-{policy}", "miou_object", f"token–object mIoU per object [{policy}]",
                        "random_miou_object")]
    rows += [Metric("probe", key, f"{label} [global crop]", "majority") for key, label in PROBE_METRICS]
    for policy in policies:
        rows += [Metric(f"recon-{policy}", "psnr", f"PSNR dB [{policy}]"),
                 Metric(f"recon-{policy}", "psnr_gain_over_other",
                        f"PSNR gain over another image, dB (0: message ignored) [{policy}]"),
                 Metric(f"recon-{policy}", "ssim", f"SSIM [{policy}]"),
                 Metric(f"recon-{policy}", "rfid", f"rFID, {config.eval.fid_features} features [{policy}]",
                        higher_is_better=False),
                 Metric(f"recon-{policy}", "codebook_perplexity", f"codebook perplexity [{policy}]"),
                 Metric(f"recon-{policy}", "per_position_distinct_mean",
                        f"distinct ids per message position [{policy}]")]
    return rows


def collapsed_units(parts: dict[Unit, dict]) -> list[Unit]:
    """Units whose every message was the same: each position held one id over all images, so the
    message says nothing about the image (a collapsed tokenizer, not a finding about crops)."""
    found = []
    for unit, unit_parts in parts.items():
        distinct = [p["metrics"].get("per_position_distinct_mean") for name, p in unit_parts.items()
                    if name.startswith("recon-")]
        if distinct and all(d is not None and d <= 1.0 for d in distinct):
            found.append(unit)
    return found


# ---------------------------------------------------------------------- reading
def load_parts(config: ExperimentConfig, out: Path) -> dict[Unit, dict[str, dict]]:
    """Every finished evaluation part of every unit: ``{unit: {part: results}}``."""
    found = {}
    for unit in units(config):
        folder = unit.eval_dir(out)
        parts = {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/results.json"))}
        if parts:
            found[unit] = parts
    return found


def load_training(config: ExperimentConfig, out: Path) -> dict[Unit, dict]:
    """The training record of every finished unit."""
    records = {}
    for unit in units(config):
        path = unit.run_dir(out) / UNIT_FILE
        if path.is_file():
            records[unit] = json.loads(path.read_text())
    return records


def metric_value(parts: dict[str, dict], metric: Metric) -> float | None:
    part = parts.get(metric.part)
    return None if part is None else part.get("metrics", {}).get(metric.key)


def floor_value(parts: dict[str, dict], metric: Metric) -> float | None:
    """Chance level: random maps for alignment, always the most frequent label(s) for probes."""
    part = parts.get(metric.part)
    if part is None or metric.floor is None:
        return None
    if metric.floor != "majority":
        return part.get("metrics", {}).get(metric.floor)
    for row in part.get("rows", []):
        key = f"{row['task']}_{row['primary']}" if row["test"] == "test" else \
            f"{row['task']}_{row['test']}_{row['primary']}"
        if key == metric.key:
            return row.get(f"majority_{row['primary']}")
    return None


# ---------------------------------------------------------------------- tables
def per_seed(config: ExperimentConfig, parts: dict[Unit, dict], metric: Metric) -> dict[str, dict[int, float]]:
    """``{arm: {seed: value}}`` of one metric over the finished units."""
    values: dict[str, dict[int, float]] = {arm: {} for arm in config.arms}
    for unit, unit_parts in parts.items():
        value = metric_value(unit_parts, metric)
        if unit.arm in values and value is not None:
            values[unit.arm][unit.seed] = value
    return values


def arm_table(config: ExperimentConfig, parts: dict[Unit, dict]) -> list[dict]:
    """One row per metric: mean ± 95 % interval per arm over seeds, the chance floor, and each arm's
    paired difference to the first (reference) arm."""
    reference = next(iter(config.arms))
    rows = []
    for metric in arm_metrics(config):
        values = per_seed(config, parts, metric)
        if not any(values.values()):
            continue
        floors = [floor_value(p, metric) for p in parts.values()]
        rows.append({"metric": metric.name, "label": metric.label, "higher_is_better": metric.higher_is_better,
                     "values": values,
                     "arms": {arm: _as_dict(mean_ci(list(v.values()))) for arm, v in values.items()},
                     "floor": _as_dict(mean_ci([f for f in floors if f is not None])),
                     "differences": {arm: _as_dict(paired_difference(values[arm], values[reference]))
                                     for arm in config.arms if arm != reference}})
    return rows


def curve_values(config: ExperimentConfig, parts: dict[Unit, dict]) -> dict[tuple, dict[int, float]]:
    """``{(arm, policy, num_crops, metric): {seed: value}}`` from the crop curves."""
    values: dict[tuple, dict[int, float]] = defaultdict(dict)
    for unit, unit_parts in parts.items():
        curves = unit_parts.get("crops")
        if curves is None:
            continue
        for row in curves["rows"]:
            for metric in curves["metrics"]:
                if row.get(metric) is not None:
                    values[(unit.arm, row["policy"], row["num_crops"], metric)][unit.seed] = row[metric]
    return dict(values)


def curve_table(config: ExperimentConfig, parts: dict[Unit, dict]) -> list[dict]:
    """One row per (arm, policy, crops): each metric's mean and 95 % half-width over seeds."""
    grouped: dict[tuple, dict] = {}
    for (arm, policy, crops, metric), by_seed in curve_values(config, parts).items():
        row = grouped.setdefault((arm, policy, crops), {"arm": arm, "policy": policy, "num_crops": crops})
        estimate = mean_ci(list(by_seed.values()))
        row[metric], row[f"{metric}_ci95"], row["n"] = estimate.mean, estimate.half_width, estimate.n
    return [grouped[k] for k in sorted(grouped, key=lambda k: (list(config.arms).index(k[0]), k[1], k[2]))]


# ---------------------------------------------------------------------- claims
def check_claims(config: ExperimentConfig, parts: dict[Unit, dict]) -> list[dict]:
    """Each claim's paired difference (expected better minus expected worse) and a verdict."""
    curves = curve_values(config, parts)
    metrics = {m.name: m for m in arm_metrics(config)}
    checked = []
    for claim in config.claims:
        better, worse, higher = _claim_sides(claim, config, parts, curves, metrics)
        difference = paired_difference(better, worse) if higher else paired_difference(worse, better)
        checked.append({"text": claim.text, "paper": claim.paper, "metric": claim.metric, "kind": claim.kind,
                        "compared": _compared(claim), "difference": _as_dict(difference),
                        "better_mean": _as_dict(mean_ci(list(better.values()))),
                        "worse_mean": _as_dict(mean_ci(list(worse.values()))), "verdict": verdict(difference)})
    return checked


def _claim_sides(claim: ClaimConfig, config, parts, curves, metrics) -> tuple[dict, dict, bool]:
    if claim.kind == "arms":
        metric = metrics.get(claim.metric) or Metric(*claim.metric.split("/", 1), label=claim.metric)
        values = per_seed(config, parts, metric)
        return values.get(claim.arm, {}), values.get(claim.baseline, {}), metric.higher_is_better
    fewer, more = claim.crops
    key = (claim.arm, claim.policy)
    return curves.get((*key, more, claim.metric), {}), curves.get((*key, fewer, claim.metric), {}), True


def _compared(claim: ClaimConfig) -> str:
    if claim.kind == "arms":
        return f"{claim.arm} − {claim.baseline}"
    return f"{claim.arm}, {claim.policy}: {claim.crops[1]} − {claim.crops[0]} crops"


def verdict(difference: Estimate | None) -> str:
    """Whether the expected direction holds, with the 95 % interval of the paired difference."""
    if difference is None:
        return "not measured yet"
    if difference.half_width is None:
        return "one seed only: no interval"
    if difference.mean > 0:
        return "holds (95 % CI excludes 0)" if difference.excludes_zero() else "same direction, not significant"
    return "reversed (95 % CI excludes 0)" if difference.excludes_zero() else "opposite direction, not significant"


def _as_dict(estimate: Estimate | None) -> dict | None:
    return None if estimate is None else estimate.as_dict()
