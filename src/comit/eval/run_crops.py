"""``comit eval crops``: every metric as a function of the number of crops and their order.

The paper's test-time scaling: the same model, asked to look at more crops, should reconstruct
better, align better and know more. For each policy (an order, with or without the global crop
first) each image is tokenized one crop at a time, resuming the previous message, and at each
requested count the message is scored exactly as ``eval recon`` / ``eval align`` / ``eval
probe`` would score a fresh tokenization with that many crops. Probes are trained once, on the
probe policy's messages (global crop only by default), and tested on the messages of every point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..model.comit import COMiT
from ..model.policy_names import POLICY_NAMES
from ..metrics.alignment import AlignmentIoU
from ..metrics.fid_features import build_fid, describe_features, resolve_features
from ..metrics.registry import curve_metrics
from .protocol import EvalSettings, batches, crop_steps, decode_batch
from .results import EvalResult
from .run_align import AlignSettings, attention_batch
from .run_probe import Messages, ProbeSettings, annotations, probe_metric_key, probe_policy, score_probe, \
    tokenize_messages, train_probes
from .run_recon import ReconMetrics

METRIC_FAMILIES = ("recon", "align", "probe")
POINT_KEYS = ("policy", "order", "global_crop", "num_crops")  # what names a point; the rest are metrics


@dataclass(kw_only=True)
class CurveResult(EvalResult):
    """``eval crops``'s numbers: one ``rows`` entry per (policy, crop count) with the point's
    metrics, and ``metrics``: the metric columns (those some point could measure)."""

    BODY = ("rows", "metrics")
    rows: list[dict]
    metrics: list[str]


@dataclass
class CurveSettings:
    """Which policies and crop counts to measure, and which metric families."""

    orders: Sequence[str] = POLICY_NAMES
    global_crop: Sequence[bool] = (False, True)
    crop_counts: Sequence[int] | None = None  # None: 1, 2, ... up to every crop
    metrics: Sequence[str] | None = None  # None: recon, plus align / probe where the data allows

    def describe(self) -> dict:
        return {"orders": list(self.orders), "global_crop": list(self.global_crop),
                "crop_counts": list(self.crop_counts) if self.crop_counts else "all",
                "metrics": list(self.metrics) if self.metrics else "auto"}


def policy_name(order: str, global_crop: bool) -> str:
    return f"{order}+global" if global_crop else order


def _families(curves: CurveSettings, dataset: Dataset, probe_train: Dataset | None) -> list[str]:
    if curves.metrics:
        unknown = [m for m in curves.metrics if m not in METRIC_FAMILIES]
        if unknown:
            raise ValueError(f"unknown metric families {unknown}; use {', '.join(METRIC_FAMILIES)}")
        if "probe" in curves.metrics and probe_train is None:
            raise ValueError("probe curves need probe-training images (probe_train)")
        return list(curves.metrics)
    families = ["recon"]
    if "masks" in dataset[0]:
        families.append("align")
    if probe_train is not None:
        families.append("probe")
    return families


def _counts(model: COMiT, curves: CurveSettings, global_crop: bool) -> list[int]:
    available = model.crops.num_indices(global_crop)
    counts = sorted(set(curves.crop_counts)) if curves.crop_counts else list(range(1, available + 1))
    if counts[0] < 1:
        raise ValueError(f"crop counts must be >= 1, got {counts}")
    return [k for k in counts if k <= available]


class _Point:
    """Accumulators for one (policy, crop count) point."""

    def __init__(self, model: COMiT, families: list[str], fid_features, align: AlignSettings):
        self.recon = ReconMetrics(model, build_fid(fid_features, model.device)[0]) if "recon" in families else None
        self.align = AlignmentIoU(align.qs) if "align" in families else None
        self.ids, self.codes = [], []


def evaluate_crop_curves(model: COMiT, dataset: Dataset, settings: EvalSettings | None = None,
                         curves: CurveSettings | None = None, fid_features: str | nn.Module | None = "none",
                         align: AlignSettings | None = None, probe_train: Dataset | None = None,
                         probe: ProbeSettings | None = None, probe_settings: EvalSettings | None = None
                         ) -> CurveResult:
    """A table with one row per (policy, number of crops) and the metrics of each family.

    ``settings`` gives decoding, seed and batch size (its order / num_crops are replaced by the
    curves'); ``probe_train`` (images to train the probes on) enables the probe family, trained
    under ``probe_settings`` (default: global crop only).
    """
    settings, curves, align = settings or EvalSettings(), curves or CurveSettings(), align or AlignSettings()
    families = _families(curves, dataset, probe_train)
    for order in curves.orders:
        if order not in POLICY_NAMES:
            raise ValueError(f"crop curves take named orders ({', '.join(POLICY_NAMES)}), got {order!r}")
    notes, trained, test_meta, probe = [], [], None, probe or ProbeSettings()
    if "probe" in families:
        probe_settings = probe_settings or probe_policy(batch_size=settings.batch_size, seed=settings.seed,
                                                        progress=settings.progress)
        train = tokenize_messages(model, probe_train, probe_settings, "tokenize probe-train")
        test_meta = _annotations(dataset, settings)
        trained, task_notes = train_probes(train, Messages(train.ids[:0], train.codes[:0], test_meta, train.vocab_size),
                                           probe, progress=settings.progress)
        notes += task_notes
    described_features = describe_features(fid_features)
    if "recon" in families:
        fid_features = resolve_features(fid_features)
        fid_note = build_fid(fid_features, model.device)[1]
        notes += [fid_note] if fid_note else []
    rows = []
    for order in curves.orders:
        for global_crop in curves.global_crop:
            counts = _counts(model, curves, global_crop)
            if counts:
                rows += _policy_rows(model, dataset, settings, order, global_crop, counts, families, fid_features,
                                     align, trained, probe, test_meta)
    if not rows:
        raise ValueError(f"no crop count in {list(curves.crop_counts)} is possible: the model has "
                         f"{model.crops.num_local} local crops (+1 with the global crop)")
    # A metric no point could measure (rFID without features) is left out, with its note.
    columns = [c for c in rows[0] if c not in POINT_KEYS and any(r.get(c) is not None for r in rows)]
    rows = [{k: v for k, v in r.items() if k in columns or k in POINT_KEYS} for r in rows]
    return CurveResult(rows=rows, metrics=columns, notes=notes,
                       settings=_described(settings, curves, families, described_features, len(dataset),
                                           len(probe_train) if trained else None, align, probe))


def _described(settings: EvalSettings, curves: CurveSettings, families: list[str], fid_features: str,
               num_images: int, train_images: int | None, align: AlignSettings, probe: ProbeSettings) -> dict:
    """The settings a curve result records (the policy's own are the curves', not ``settings``')."""
    policy_keys = ("order", "num_crops", "global_crop")
    return {**{k: v for k, v in settings.describe().items() if k not in policy_keys},
            **curves.describe(), "families": families, "fid_features": fid_features,
            "num_images": num_images, **({"train_images": train_images} if train_images is not None else {}),
            **(align.describe() if "align" in families else {}),
            **(probe.describe() if "probe" in families else {})}


def _annotations(dataset: Dataset, settings: EvalSettings) -> dict[str, torch.Tensor]:
    metas = [annotations(batch) for batch in batches(dataset, settings.batch_size, "annotations", False)]
    return {key: torch.cat([m[key] for m in metas]) for key in metas[0]}


def _policy_rows(model, dataset, settings, order, global_crop, counts, families, fid_features, align, trained,
                 probe, test_meta) -> list[dict]:
    points = {k: _Point(model, families, fid_features, align) for k in counts}
    name = policy_name(order, global_crop)
    for batch in batches(dataset, settings.batch_size, name, settings.progress):
        positions = batch["position"]
        steps = crop_steps(model, batch["image"], positions, order, global_crop, settings.seed, max(counts))
        for k, tokens in enumerate(steps, start=1):
            point = points.get(k)
            if point is None:
                continue
            if point.recon is not None:
                point.recon.update(batch["image"], decode_batch(model, tokens, positions, settings), tokens)
            if point.align is not None:
                point.align.update(attention_batch(model, batch, settings, align, tokens), batch["masks"],
                                   batch["valid"])
            if trained:
                point.ids.append(tokens.ids.cpu())
                point.codes.append(tokens.messages.cpu())
    return [_row(name, order, global_crop, k, point, trained, probe, test_meta, model) for k, point in points.items()]


def _row(name, order, global_crop, k, point: _Point, trained, probe, test_meta, model) -> dict:
    row = {"policy": name, "order": order, "global_crop": global_crop, "num_crops": k}
    if point.recon is not None:
        metrics, _ = point.recon.compute()
        row.update({key: metrics[key] for key in curve_metrics("recon")})
    if point.align is not None:
        scores = point.align.compute()
        row.update({key: scores[key] for key in curve_metrics("align")})
    if trained:
        messages = Messages(torch.cat(point.ids), torch.cat(point.codes), test_meta, model.codebook_size)
        for t in trained:
            for r in score_probe(t, messages, probe):
                row[probe_metric_key(r)] = r[r["primary"]]
    return row


def write_crops_report(out: Path, results: CurveResult) -> None:
    """results.json, results.md and one line plot per metric (x: crops, one line per policy)."""
    from ..plots import plot_curves
    from .report import markdown_report, markdown_table, write_results

    plots = []
    for metric in results.metrics:
        if any(isinstance(r.get(metric), (int, float)) and not isinstance(r.get(metric), bool)
               for r in results.rows):
            name = f"crops_{metric}.png"
            plot_curves(results.rows, x="num_crops", y=metric, hue="policy", path=out / name,
                        xlabel="crops observed", title=f"{metric} against crops")
            plots.append(f"![{metric}]({name})")
    table = markdown_table(results.rows, ["policy", "num_crops", *results.metrics])
    sections = [("Table", table), ("Plots", "\n\n".join(plots) or "nothing numeric to plot")]
    data = results.to_json()
    write_results(out, data, markdown_report("Metrics against crops", data, sections))
