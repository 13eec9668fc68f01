"""Mean ± 95 % interval over seeds, paired differences and the claim verdicts."""

from __future__ import annotations

import math

import pytest

from comit.experiments.aggregate import verdict
from comit.experiments.statistics import Estimate, mean_ci, paired_difference, t_quantile


def test_interval_uses_student_t_with_sample_deviation():
    estimate = mean_ci([1.0, 2.0, 3.0])
    assert estimate.mean == pytest.approx(2.0) and estimate.n == 3
    assert estimate.half_width == pytest.approx(4.303 * 1.0 / math.sqrt(3))  # sd = 1 with n - 1
    assert estimate.text(2) == "2.00 ± 2.48"


def test_t_quantiles_and_large_samples():
    assert t_quantile(1) == pytest.approx(12.706) and t_quantile(30) == pytest.approx(2.042)
    assert t_quantile(200) == pytest.approx(1.96)
    with pytest.raises(ValueError, match="at least 2 values"):
        t_quantile(0)


def test_single_missing_and_non_finite_values():
    assert mean_ci([]) is None and mean_ci([None, float("nan")]) is None
    single = mean_ci([0.5, None, float("inf")])
    assert single == Estimate(0.5, None, 1) and single.text() == "0.500"
    assert not single.excludes_zero()


def test_paired_difference_matches_seeds():
    a = {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.9}
    b = {0: 0.3, 1: 0.5, 2: 0.4}  # seed 3 has no partner
    difference = paired_difference(a, b)
    assert difference.n == 3 and difference.mean == pytest.approx((0.2 + 0.1 + 0.3) / 3)
    assert difference.half_width == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert paired_difference(a, {}) is None


@pytest.mark.parametrize("estimate, expected", [
    (None, "not measured yet"), (Estimate(0.1, None, 1), "one seed only"),
    (Estimate(0.2, 0.1, 3), "holds"), (Estimate(0.05, 0.1, 3), "same direction, not significant"),
    (Estimate(-0.05, 0.1, 3), "opposite direction, not significant"), (Estimate(-0.2, 0.1, 3), "reversed")])
def test_verdicts(estimate, expected):
    assert verdict(estimate).startswith(expected)


def test_collapsed_units_are_those_whose_messages_never_vary():
    from comit.eval.run_probe import ProbeResult
    from comit.eval.run_recon import ReconResult
    from comit.experiments.aggregate import collapsed_units
    from comit.experiments.runner import Unit

    def recon(distinct):
        return ReconResult(metrics={"per_position_distinct_mean": distinct})

    probe = ProbeResult(metrics={}, rows=[], history=[])
    parts = {Unit("L", 0): {"recon-global": recon(1.0), "recon-all": recon(1.0), "probe": probe},
             Unit("L", 1): {"recon-global": recon(1.0), "recon-all": recon(3.5)},
             Unit("G", 0): {"probe": probe}}
    assert collapsed_units(parts) == [Unit("L", 0)]


def test_a_units_final_losses_hold_every_logged_term(tmp_path):
    """The runner keeps every term of LOSS_TERMS that training logged (saturation included), and
    the report's Units table shows the terms some unit logged."""
    import json

    from comit.experiments.report import _logged_terms
    from comit.experiments.runner import _final_losses

    logged = {"step": 5, "loss": 0.4, "fm": 0.3, "saturation": 0.1, "lr": 1e-4}
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n" + json.dumps(logged) + "\n")
    final = _final_losses(tmp_path)
    assert final == {"step": 5, "loss": 0.4, "fm": 0.3, "saturation": 0.1}
    assert _logged_terms([final, {"fm": 0.2, "repa": -0.5}]) == ["fm", "repa", "saturation"]


def test_units_below_the_working_tokenizer_gate_are_left_out():
    from comit.eval.run_recon import ReconResult
    from comit.experiments.aggregate import failed_gate, gate_gains
    from comit.experiments.config import load_experiment
    from comit.experiments.runner import Unit

    def recon(gain):
        return ReconResult(metrics={"psnr_gain_over_other": gain})

    config = load_experiment("structure-tiny", ["eval.gate={policy: global, min_gain_db: 5.0}"])
    parts = {Unit("L", 0): {"recon-global": recon(7.2)}, Unit("G", 0): {"recon-global": recon(4.9)},
             Unit("G", 1): {"probe": None}}
    assert gate_gains(config, parts) == {Unit("L", 0): 7.2, Unit("G", 0): 4.9, Unit("G", 1): None}
    assert failed_gate(config, parts) == [Unit("G", 0)]
    assert failed_gate(load_experiment("structure-tiny"), parts) == []  # no gate: nothing left out


def test_a_gate_on_an_unknown_policy_is_a_one_line_error():
    from comit.experiments.config import load_experiment
    from comit.train.config import ConfigError

    with pytest.raises(ConfigError, match="eval.gate.policy 'nope' is not one of the eval policies"):
        load_experiment("structure-tiny", ["eval.gate={policy: nope}"])


def _relational_rows(model: float, scene: float, random: float) -> list[dict]:
    """A probe part's rows for the relational task: the model's messages and both controls
    (4 classes, 1,000 test samples, chance 0.25; each interval ±0.02)."""
    base = {"task": "relational", "test": "test", "primary": "top1", "num_classes": 4, "top5": 1.0,
            "prior_top1": 0.25, "prior_top5": 1.0, "majority_top1": 0.25, "majority_top5": 1.0}
    return [{**base, "messages": source, "top1": score, "ci95_low": score - 0.02, "ci95_high": score + 0.02}
            for source, score in (("model", model), ("scene", scene), ("random", random))]


def test_a_seed_whose_probe_fails_its_controls_is_left_out_of_probe_tables_and_claims():
    """Seed 1's probe cannot read the true scene (0.58 < 0.625, halfway from chance to 1): its
    relational scores say nothing about its models, so every relational row and claim drops seed 1,
    while the alignment claim keeps all seeds."""
    from comit.eval.run_crops import CurveResult
    from comit.eval.run_probe import ProbeResult
    from comit.eval.run_recon import ReconResult
    from comit.experiments.aggregate import arm_table, check_claims, control_failures, control_table
    from comit.experiments.config import load_experiment
    from comit.experiments.runner import Unit

    config = load_experiment("structure")
    scene = {0: 0.88, 1: 0.58, 2: 0.86}
    model = {("L", 0): 0.58, ("G", 0): 0.39, ("L", 1): 0.68, ("G", 1): 0.70, ("L", 2): 0.60, ("G", 2): 0.45}
    curve = {0: (0.50, 0.55), 1: (0.60, 0.20), 2: (0.52, 0.56)}  # relational at 1 and 10 crops, arm L

    def unit_parts(arm: str, seed: int) -> dict:
        parts = {"probe": ProbeResult(metrics={"relational_top1": model[arm, seed]},
                                      rows=_relational_rows(model[arm, seed], scene[seed], 0.25), history=[]),
                 "align-global": ReconResult(metrics={"miou_image": 0.3 + 0.01 * seed + (0.02 if arm == "L" else 0)})}
        if arm == "L":
            parts["crops"] = CurveResult(metrics=["relational_top1"], rows=[
                {"policy": "raster_scan+global", "num_crops": crops, "relational_top1": value}
                for crops, value in zip((1, 10), curve[seed])])
        return parts

    parts = {Unit(arm, seed): unit_parts(arm, seed) for seed in (0, 1, 2) for arm in ("L", "G")}
    assert control_failures(parts) == {"relational_top1": {1}}
    assert [row["failed_seeds"] for row in control_table(parts)] == [[1]]

    relational = next(r for r in arm_table(config, parts) if r["metric"] == "probe/relational_top1")
    assert relational["left_out_seeds"] == [1] and relational["values"]["L"] == {0: 0.58, 2: 0.60}
    assert relational["ceiling"]["mean"] == pytest.approx(0.87)  # seeds 0 and 2 only

    claims = {c["metric"]: c for c in check_claims(config, parts)}
    curve_claim = claims["relational_top1"]
    assert curve_claim["left_out_seeds"] == [1] and curve_claim["difference"]["n"] == 2
    assert curve_claim["difference"]["mean"] == pytest.approx(0.045)  # seed 1's -0.40 would reverse it
    assert curve_claim["verdict"].endswith("seed 1 left out: the probe failed its controls there")
    assert claims["align-global/miou_image"]["left_out_seeds"] == []
    assert claims["align-global/miou_image"]["difference"]["n"] == 3
