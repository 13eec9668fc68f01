"""The metric registry (comit.metrics.registry) and the typed results: every key a result writes is
declared, the experiment tables and verdicts take directions and floors from the declarations,
and each result's to_json is its results.json and reads back unchanged."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from comit.eval.protocol import EvalSettings, batches, load_dataset
from comit.metrics.registry import FAMILIES, METRICS, compared, curve_metrics, headline, spec
from comit.eval.report import json_safe
from comit.metrics.spec import MAJORITY
from comit.eval.run_align import AlignResult, AlignSettings, evaluate_alignment
from comit.eval.run_crops import CurveResult
from comit.eval.run_probe import ProbeResult, annotations, probe_metric_key
from comit.eval.run_recon import ReconMetrics, ReconResult
from comit.eval.run_suite import RESULT_TYPES, read_result
from comit.metrics.probe_tasks import build_tasks, default_tasks


# ---------------------------------------------------------------------- every written key is declared
def test_reconstruction_writes_only_declared_metrics():
    model = SimpleNamespace(config=SimpleNamespace(image_size=16), codebook_size=8)
    tokens = SimpleNamespace(ids=torch.zeros(2, 2, dtype=torch.long), num_crops=torch.ones(2))
    metrics = ReconMetrics(model, fid=None)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    metrics.update(images, images, tokens)
    values, _ = metrics.compute()
    assert set(values) | {"rfid_feature_dim"} == {s.key for s in FAMILIES["recon"]}
    assert [s.key for s in FAMILIES["recon"]][:len(values)] == list(values)  # declared in the order written


def test_alignment_writes_only_declared_metrics(tiny_model):
    dataset = load_dataset("shapes", 64, num_images=2)
    result = evaluate_alignment(tiny_model, dataset, EvalSettings(num_crops=1, progress=False), AlignSettings(qs=(10,)))
    assert list(result.metrics) == [s.key for s in FAMILIES["align"]]
    assert set(result.per_q[0]) - {"q"} <= set(METRICS)


def test_every_probe_task_and_test_set_is_declared():
    dataset = load_dataset("shapes", 64, num_images=16)
    meta = annotations(next(batches(dataset, 16, "meta", progress=False)))
    tasks = build_tasks(default_tasks(meta), meta, meta) + build_tasks(["classes"], {"labels": torch.zeros(4, 1).long()},
                                                                        {"labels": torch.zeros(4, 1).long()}, ["a", "b"])
    keys = [probe_metric_key({"task": t.name, "test": test, "primary": t.primary}) for t in tasks for test in t.tests]
    assert keys and all(key in METRICS and spec(key).floor == MAJORITY for key in keys)


def test_undeclared_keys_are_refused_and_no_key_means_two_things():
    with pytest.raises(KeyError, match="not declared"):
        spec("psnr_typo")
    declared = [s for family in FAMILIES.values() for s in family]
    for s in declared:
        assert METRICS[s.key] == s
        assert s.floor in (None, MAJORITY) or s.floor in METRICS  # a floor is itself a reported number


# ---------------------------------------------------------------------- what the views read
def test_headline_and_curve_metrics_come_from_the_declarations():
    assert curve_metrics("recon") == ["psnr", "ssim", "rfid", "codebook_perplexity"]
    assert curve_metrics("align") == ["miou_image", "miou_object"]  # the random floors are not scores
    assert headline(["num_images", "miou_image", "random_miou_image"]) == ["miou_image", "random_miou_image"]
    assert spec("rfid").higher_is_better is False


def test_experiment_rows_directions_and_floors_are_the_registry():
    from comit.experiments.aggregate import arm_metrics, check_claims, floor_value
    from comit.experiments.config import ClaimConfig, load_experiment
    from comit.experiments.runner import Unit

    config = load_experiment("structure-tiny", seeds=[0, 1], arms=["L", "G"])
    rows = arm_metrics(config)
    for row in rows:
        assert row.spec is METRICS[row.key] and row.higher_is_better == (row.spec.higher_is_better is not False)
    shown = {row.key for row in rows}
    assert shown == {s.key for family in FAMILIES for s in compared(family)}
    miou = next(r for r in rows if r.key == "miou_image")
    align = AlignResult(metrics={"miou_image": 0.5, "random_miou_image": 0.2}, per_q=[])
    assert floor_value({miou.part: align}, miou) == 0.2
    probe = next(r for r in rows if r.key == "semantic_top1")
    row = {"task": "semantic", "test": "test", "primary": "top1", "majority_top1": 0.1}
    assert floor_value({"probe": ProbeResult(metrics={}, rows=[row], history=[])}, probe) == 0.1

    # rFID is lower-is-better: an arm with the lower rFID is the better one in the verdict.
    claim = ClaimConfig(text="L reconstructs better", metric="recon-global/rfid", arm="L", baseline="G")
    config = config.model_copy(update={"claims": [claim]})
    parts = {Unit(arm, seed): {"recon-global": ReconResult(metrics={"rfid": value + seed})}
             for arm, value in (("L", 1.0), ("G", 3.0)) for seed in (0, 1)}
    checked = check_claims(config, parts)[0]
    assert checked["difference"]["mean"] == pytest.approx(2.0)


# ---------------------------------------------------------------------- to_json / from_json
EXAMPLES = [
    ReconResult(metrics={"psnr": 20.5, "rfid": None, "num_images": 3}, notes=["a note"], settings={"seed": 0}),
    AlignResult(metrics={"miou_image": 0.3}, per_q=[{"q": 10.0, "miou_image": 0.3}], settings={"qs": [10.0]}),
    ProbeResult(metrics={"semantic_top1": 0.5}, rows=[{"task": "semantic", "test": "test", "primary": "top1"}],
                history=[{"task": "semantic", "epoch": 1, "val_top1": 0.4}]),
    CurveResult(rows=[{"policy": "adaptive", "num_crops": 1, "psnr": 12.0}], metrics=["psnr"]),
]


@pytest.mark.parametrize("result", EXAMPLES, ids=lambda r: type(r).__name__)
def test_results_round_trip_through_their_json(result, tmp_path):
    finished = result.finished("bundled", "shapes", {"device": "cpu", "wall_time_s": 1.5})
    data = finished.to_json()
    assert list(data)[:2] == ["model", "data"] and list(data)[-3:] == ["notes", "settings", "run"]
    assert list(result.to_json())[-2:] == ["notes", "settings"] and "model" not in result.to_json()
    text = json.dumps(json_safe(data))
    assert type(result).from_json(json.loads(text)) == finished
    (tmp_path / "results.json").write_text(text)
    kind = next(k for k, cls in RESULT_TYPES.items() if cls is type(result))
    assert read_result(tmp_path, kind) == finished


def test_the_files_keep_their_key_order():
    """results.json layouts the committed reports in docs/results/ have."""
    keys = {cls: list(e.finished("m", "d", {}).to_json()) for cls, e in ((type(e), e) for e in EXAMPLES)}
    assert keys[ReconResult] == ["model", "data", "metrics", "notes", "settings", "run"]
    assert keys[AlignResult] == ["model", "data", "metrics", "per_q", "notes", "settings", "run"]
    assert keys[ProbeResult] == ["model", "data", "metrics", "rows", "history", "notes", "settings", "run"]
    assert keys[CurveResult] == ["model", "data", "rows", "metrics", "notes", "settings", "run"]
