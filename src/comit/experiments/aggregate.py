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

from ..eval.results import EvalResult
from ..eval.run_probe import ProbeResult, controls_verdict, probe_metric_key
from ..eval.run_suite import CurveResult, read_result
from ..metrics.registry import METRICS, compared
from ..metrics.spec import MAJORITY, SCENE, MetricSpec
from .config import ClaimConfig, ExperimentConfig
from .runner import UNIT_FILE, Unit, part_kind, start_units, units
from .statistics import Estimate, mean_ci, paired_difference


@dataclass(frozen=True)
class Metric:
    """A row of the arm table: a registered metric (``spec``: key, direction, floor) of one
    evaluation part (``recon-global``, ``probe``, ...), and its label there."""

    part: str
    spec: MetricSpec
    label: str

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def name(self) -> str:
        return f"{self.part}/{self.key}"

    @property
    def higher_is_better(self) -> bool:
        return self.spec.higher_is_better is not False


def arm_metrics(config: ExperimentConfig) -> list[Metric]:
    """The rows of the arm table, in the order they are shown: alignment and reconstruction under
    each test policy, probes once (they read the global crop only)."""
    policies = list(config.eval.policies)

    def rows(family: str, part: str, where: str) -> list[Metric]:
        return [Metric(part, spec, f"{spec.arm_label.format(fid_features=config.eval.fid_features)} [{where}]")
                for spec in compared(family)]

    found = [m for policy in policies for m in rows("align", f"align-{policy}", policy)]
    found += rows("probe", "probe", "global crop")
    return found + [m for policy in policies for m in rows("recon", f"recon-{policy}", policy)]


def collapsed_units(parts: dict[Unit, dict[str, EvalResult]]) -> list[Unit]:
    """Units whose every message was the same: each position held one id over all images, so the
    message says nothing about the image (a collapsed tokenizer, not a finding about crops)."""
    found = []
    for unit, unit_parts in parts.items():
        distinct = [p.metrics.get("per_position_distinct_mean") for name, p in unit_parts.items()
                    if part_kind(name) == "recon"]
        if distinct and all(d is not None and d <= 1.0 for d in distinct):
            found.append(unit)
    return found


def gate_gains(config: ExperimentConfig, parts: dict[Unit, dict[str, EvalResult]]) -> dict[Unit, float | None]:
    """Each unit's PSNR gain over another image under the gate's policy (None: not measured yet);
    empty when the experiment has no gate."""
    gate = config.eval.gate
    if gate is None:
        return {}
    recon = f"recon-{gate.policy}"
    return {unit: (unit_parts[recon].metrics.get("psnr_gain_over_other") if recon in unit_parts else None)
            for unit, unit_parts in parts.items()}


def failed_gate(config: ExperimentConfig, parts: dict[Unit, dict[str, EvalResult]]) -> list[Unit]:
    """Units measured below the gate: reported, but left out of every table and claim."""
    gate = config.eval.gate
    return [unit for unit, gain in gate_gains(config, parts).items()
            if gain is not None and gain < gate.min_gain_db]


# ---------------------------------------------------------------------- reading
def load_parts(config: ExperimentConfig, out: Path) -> dict[Unit, dict[str, EvalResult]]:
    """Every finished evaluation part of every unit: ``{unit: {part: results}}``."""
    found = {}
    for unit in units(config):
        folder = unit.eval_dir(out)
        parts = {p.parent.name: read_result(p.parent, part_kind(p.parent.name))
                 for p in sorted(folder.glob("*/results.json"))}
        if parts:
            found[unit] = parts
    return found


def load_training(config: ExperimentConfig, out: Path) -> dict[Unit, dict]:
    """The training record of every finished unit, the starts' included."""
    records = {}
    for unit in [*start_units(config), *units(config)]:
        path = unit.run_dir(out) / UNIT_FILE
        if path.is_file():
            records[unit] = json.loads(path.read_text())
    return records


def metric_value(parts: dict[str, EvalResult], metric: Metric) -> float | None:
    part = parts.get(metric.part)
    return None if part is None else part.metrics.get(metric.key)


def floor_value(parts: dict[str, EvalResult], metric: Metric) -> float | None:
    """Chance level (the metric's declared floor): random maps for alignment, always the most
    frequent label(s) for probes."""
    return _declared_value(parts, metric, metric.spec.floor)


def ceiling_value(parts: dict[str, EvalResult], metric: Metric) -> float | None:
    """What a representation that certainly holds the answer scores (the metric's declared
    ceiling): the object masks as maps for alignment, the true scene as tokens for probes; None
    where the metric declares none or the part was measured before it was recorded."""
    return _declared_value(parts, metric, metric.spec.ceiling)


def _declared_value(parts: dict[str, EvalResult], metric: Metric, declared: str | None) -> float | None:
    """The value a spec's floor or ceiling names: another key of the part's metrics, or a probe's
    majority answer (``MAJORITY``) or scene control (``SCENE``), read from its rows."""
    part = parts.get(metric.part)
    if part is None or declared is None:
        return None
    if declared in (MAJORITY, SCENE):
        if not isinstance(part, ProbeResult):
            return None
        return part.floor(metric.key) if declared == MAJORITY else part.control_score(metric.key, SCENE)
    return part.metrics.get(declared)


# ---------------------------------------------------------------------- tables
def per_seed(config: ExperimentConfig, parts: dict[Unit, dict[str, EvalResult]], metric: Metric) -> dict[str, dict[int, float]]:
    """``{arm: {seed: value}}`` of one metric over the finished units."""
    values: dict[str, dict[int, float]] = {arm: {} for arm in config.arms}
    for unit, unit_parts in parts.items():
        value = metric_value(unit_parts, metric)
        if unit.arm in values and value is not None:
            values[unit.arm][unit.seed] = value
    return values


def arm_table(config: ExperimentConfig, parts: dict[Unit, dict[str, EvalResult]]) -> list[dict]:
    """One row per metric: mean ± 95 % interval per arm over seeds, the chance floor, and each arm's
    paired difference to the first (reference) arm. A probe row leaves out the seeds whose probe
    failed its controls on that task (``control_failures``)."""
    reference = next(iter(config.arms))
    failures = control_failures(parts)
    rows = []
    for metric in arm_metrics(config):
        left_out = sorted(failures.get(metric.key, set())) if metric.part == "probe" else []
        values = {arm: _without(by_seed, left_out) for arm, by_seed in per_seed(config, parts, metric).items()}
        if not any(values.values()):
            continue
        kept = [unit_parts for unit, unit_parts in parts.items() if unit.seed not in left_out]
        floors = [floor_value(p, metric) for p in kept]
        ceilings = [ceiling_value(p, metric) for p in kept]
        rows.append({"metric": metric.name, "label": metric.label, "higher_is_better": metric.higher_is_better,
                     "values": values, "left_out_seeds": left_out,
                     "arms": {arm: _as_dict(mean_ci(list(v.values()))) for arm, v in values.items()},
                     "floor": _as_dict(mean_ci([f for f in floors if f is not None])),
                     "ceiling": _as_dict(mean_ci([c for c in ceilings if c is not None])),
                     "differences": {arm: _as_dict(paired_difference(values[arm], values[reference]))
                                     for arm in config.arms if arm != reference}})
    return rows


def curve_values(config: ExperimentConfig, parts: dict[Unit, dict[str, EvalResult]]) -> dict[tuple, dict[int, float]]:
    """``{(arm, policy, num_crops, metric): {seed: value}}`` from the crop curves."""
    values: dict[tuple, dict[int, float]] = defaultdict(dict)
    for unit, unit_parts in parts.items():
        curves = unit_parts.get("crops")
        if not isinstance(curves, CurveResult):
            continue
        for row in curves.rows:
            for metric in curves.metrics:
                if row.get(metric) is not None:
                    values[(unit.arm, row["policy"], row["num_crops"], metric)][unit.seed] = row[metric]
    return dict(values)


def curve_table(config: ExperimentConfig, parts: dict[Unit, dict[str, EvalResult]]) -> list[dict]:
    """One row per (arm, policy, crops): each metric's mean and 95 % half-width over seeds."""
    grouped: dict[tuple, dict] = {}
    for (arm, policy, crops, metric), by_seed in curve_values(config, parts).items():
        row = grouped.setdefault((arm, policy, crops), {"arm": arm, "policy": policy, "num_crops": crops})
        estimate = mean_ci(list(by_seed.values()))
        row[metric], row[f"{metric}_ci95"], row["n"] = estimate.mean, estimate.half_width, estimate.n
    return [grouped[k] for k in sorted(grouped, key=lambda k: (list(config.arms).index(k[0]), k[1], k[2]))]


# ---------------------------------------------------------------------- probe controls
def control_table(parts: dict[Unit, dict[str, EvalResult]]) -> list[dict]:
    """Per probe task and test set: chance and the control messages' scores, averaged over the units
    that measured them (the controls read no model, so the arms of one seed share them), and whether
    every unit's controls behaved (``controls_verdict``)."""
    found: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for entry in _controls_verdicts(parts):
        found[(entry["task"], entry["test"])].append(entry)
    table = []
    for (task, test), entries in found.items():
        if not any(e.get("scene") is not None for e in entries):
            continue
        row = {"task": task, "test": test, "primary": entries[0]["primary"], "units": len(entries)}
        for key in ("chance_low", "chance_high", "scene", "random"):
            values = [e[key] for e in entries if e.get(key) is not None]
            row[key] = sum(values) / len(values) if values else None
        for key in ("probe_reads", "random_at_chance"):
            row[key] = all(e[key] for e in entries if e.get(key) is not None)
        row["failed_seeds"] = sorted({e["seed"] for e in entries if not _controls_passed(e)})
        table.append(row)
    return table


def _controls_verdicts(parts: dict[Unit, dict[str, EvalResult]]) -> list[dict]:
    """``controls_verdict`` of every unit's probe part, each entry marked with the unit's seed."""
    return [{**entry, "seed": unit.seed} for unit, unit_parts in parts.items()
            if isinstance(probe := unit_parts.get("probe"), ProbeResult) for entry in controls_verdict(probe.rows)]


def _controls_passed(entry: dict) -> bool:
    """The positive control read and the negative stayed at chance (a control not measured passes)."""
    return entry.get("probe_reads") is not False and entry.get("random_at_chance") is not False


def control_failures(parts: dict[Unit, dict[str, EvalResult]]) -> dict[str, set[int]]:
    """Per probe metric key (``relational_top1``): the seeds whose probe failed its controls on that
    task. The controls read no model, so a failure belongs to the probe's seed (shared by the arms
    and by the same seed's crop-curve probe), and every probe claim leaves that seed out."""
    failures: dict[str, set[int]] = defaultdict(set)
    for entry in _controls_verdicts(parts):
        if not _controls_passed(entry):
            failures[probe_metric_key(entry)].add(entry["seed"])
    return dict(failures)


# ---------------------------------------------------------------------- claims
def check_claims(config: ExperimentConfig, parts: dict[Unit, dict[str, EvalResult]]) -> list[dict]:
    """Each claim's paired difference (expected better minus expected worse) and a verdict."""
    curves = curve_values(config, parts)
    metrics = {m.name: m for m in arm_metrics(config)}
    failures = control_failures(parts)
    checked = []
    for claim in config.claims:
        better, worse, higher = _claim_sides(claim, config, parts, curves, metrics)
        left_out = sorted(failures.get(_probe_key(claim), set()) & (better.keys() | worse.keys()))
        better, worse = _without(better, left_out), _without(worse, left_out)
        difference = paired_difference(better, worse) if higher else paired_difference(worse, better)
        checked.append({"text": claim.text, "paper": claim.paper, "metric": claim.metric, "kind": claim.kind,
                        "compared": _compared(claim), "difference": _as_dict(difference),
                        "better_mean": _as_dict(mean_ci(list(better.values()))),
                        "worse_mean": _as_dict(mean_ci(list(worse.values()))), "left_out_seeds": left_out,
                        "verdict": verdict(difference) + _left_out_text(left_out)})
    return checked


def _probe_key(claim: ClaimConfig) -> str | None:
    """The probe metric key a claim reads (``probe/relational_top1`` and a curve's ``relational_top1``
    alike); None for an arms claim on another part, which no probe control speaks for (as in
    ``arm_table``)."""
    if claim.kind != "arms":
        return claim.metric
    part, _, key = claim.metric.partition("/")
    return key if part == "probe" else None


def _without(values: dict[int, float], seeds: list[int]) -> dict[int, float]:
    return {seed: value for seed, value in values.items() if seed not in seeds}


def _left_out_text(seeds: list[int]) -> str:
    if not seeds:
        return ""
    names = ", ".join(str(s) for s in seeds)
    return f"; seed{'s' if len(seeds) > 1 else ''} {names} left out: the probe failed its controls there"


def _claim_sides(claim: ClaimConfig, config, parts, curves, metrics) -> tuple[dict, dict, bool]:
    """Each seed's value on the side expected better and on the other, and whether higher is better
    (the registry's direction; an undeclared key is taken as higher-is-better and finds no values)."""
    if claim.kind == "arms":
        part, _, key = claim.metric.partition("/")
        metric = metrics.get(claim.metric) or Metric(part, METRICS.get(key) or MetricSpec(key, claim.metric),
                                                     claim.metric)
        values = per_seed(config, parts, metric)
        return values.get(claim.arm, {}), values.get(claim.baseline, {}), metric.higher_is_better
    fewer, more = claim.crops
    key = (claim.arm, claim.policy)
    spec = METRICS.get(claim.metric)
    higher = spec is None or spec.higher_is_better is not False
    return curves.get((*key, more, claim.metric), {}), curves.get((*key, fewer, claim.metric), {}), higher


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
