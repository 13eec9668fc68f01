"""comit bench: analytic FLOPs, call counting, timing helpers, and the tiny end-to-end run."""

import json
import os

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from comit import COMiT
from comit.bench.counting import count_calls
from comit.bench.flops import transformer_call_flops
from comit.bench.timing import measure_peak_memory, time_interleaved
from comit.cli import app

from conftest import tiny_config


@pytest.mark.parametrize("mode", ["hard", "released"])
@pytest.mark.parametrize("side,with_queries", [(24, True), (64, False), (64, True)])
def test_analytic_flops_match_torch_flop_counter(mode, side, with_queries):
    """Explicit attention (so that torch's counter sees the attention matmuls too)."""
    model = COMiT(tiny_config(attention=mode)).predictor
    depth = model.depth
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(3, 3, side, side), torch.rand(3), torch.zeros(3, 16, 6), torch.zeros(3, 2),
              with_queries=with_queries, attention_layers=tuple(range(depth)))
    flops = transformer_call_flops(model, 3, side, with_queries)
    assert flops.total == counter.get_total_flops()
    queries = 16 if with_queries or mode == "released" else 0
    assert flops.tokens == 3 * (1 + (side // 4) ** 2 + 16 + queries)


def test_adaln_counts_once_per_sample_not_per_token():
    model = COMiT(tiny_config()).predictor
    short, long = transformer_call_flops(model, 1, 24), transformer_call_flops(model, 1, 64)
    assert short.per_sample == long.per_sample
    assert long.per_token_weights > short.per_token_weights


def test_count_calls_records_and_restores(tiny_model, tiny_images):
    vae = tiny_model.vae
    with count_calls(tiny_model) as calls:
        tiny_model.tokenize(tiny_images, order="adaptive", num_crops=2, generator=torch.Generator().manual_seed(0))
    assert [(b, side, q) for b, side, q in calls.transformer] == [(2, 24, True), (2, 64, False), (2, 24, True)]
    assert calls.vae_encode == [(2, 3, 24, 24)] * 2 and calls.vae_decode == [(2, 3, 64, 64)]
    assert "encode" not in vars(vae) and "decode" not in vars(vae)  # the class methods are back
    assert not tiny_model.predictor._forward_pre_hooks
    summary = calls.summary(tiny_model)
    assert summary["transformer_calls"] == 3 and summary["transformer_flops"] > 0


def test_time_interleaved_runs_warmup_and_repeats_round_robin():
    order = []
    timings = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                               torch.device("cpu"), repeats=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert timings["a"].repeats == 3 and timings["a"].min_s <= timings["a"].median_s <= timings["a"].max_s
    with pytest.raises(ValueError, match="repeats"):
        time_interleaved({"a": lambda: None}, torch.device("cpu"), repeats=0)


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable VmHWM")
def test_peak_memory_is_per_measurement():
    """256 MiB touched in one run shows in its peak; the runs before and after start afresh."""
    before = measure_peak_memory(lambda: None, torch.device("cpu"))
    large = measure_peak_memory(lambda: torch.ones(256 * 2**20 // 4).add_(1), torch.device("cpu"))
    after = measure_peak_memory(lambda: None, torch.device("cpu"))
    assert large >= before + 200 and large >= after + 200


def test_tiny_bench_writes_every_field(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--size", "tiny", "--out", str(tmp_path), "--repeats", "1",
                                      "--threads", "1", "--forward-batches", "1,2", "--train-configs", "tiny"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.md").read_text().startswith("# comit bench")
    assert data["peak"]["gflops"]["median"] > 0
    assert data["machine"]["cpu"] and data["machine"]["date"]
    forward = {(r["attention"], r["kind"], r["batch"]) for r in data["forward"]}
    assert forward == {(m, k, b) for m in ("hard", "released") for k in ("encode", "decode") for b in (1, 2)}
    tokens = {(r["attention"], r["kind"]): r["tokens_per_sample"] for r in data["forward"]}
    # 1 offset + 36 crop patches or 256 image patches + 16 message tokens (+ 16 queries)
    assert tokens == {("hard", "encode"): 69, ("released", "encode"): 69, ("hard", "decode"): 273,
                      ("released", "decode"): 289}
    for row in data["forward"]:
        assert row["ms"] > 0 and row["gflops"] > 0 and 0 < row["pct_of_peak"] and row["flops"]["total"] > 0
        assert row["peak_memory_mb"] > 0
    cases = {(r["attention"], r["case"]) for r in data["tokenize"]}
    assert {("hard", c) for c in ("global", "adaptive", "adaptive_latent", "adaptive_baseline", "raster")} <= cases
    adaptive = [r for r in data["tokenize"] if r["case"] == "adaptive"]
    assert all(r["same_crop_order_as_baseline"] and r["same_tokens_as_baseline"] for r in adaptive)
    assert all(r["calls"]["transformer_calls"] == 5 for r in adaptive)
    detok = {(r["attention"], r["cfg_weight"], r["decode"], r["variant"]) for r in data["detokenize"]}
    assert detok == {(m, w, d, v) for m in ("hard", "released") for w in (7.5, 1.0) for d in (False, True)
                     for v in ("ours", "baseline")}
    assert all(r["max_abs_diff_vs_baseline"] < 1e-4 for r in data["detokenize"] if r["variant"] == "ours")
    assert all(r["images_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in data["tokenize"] + data["detokenize"])
    paths = {r["fast_path"] for r in data["fast_paths"]["rows"]}
    assert {"fused_attention", "drop_queries", "skip_unconditional_at_w1", "batch_guidance_passes",
            "inference_mode", "bf16_autocast"} <= paths
    assert data["fast_paths"]["adaptive_attribution"]["rows"]
    train, before = data["train"]["rows"]
    assert (train["variant"], before["variant"]) == ("current", "2026-12-06")
    assert train["config"] == before["config"] == "tiny" and train["batch"] == 16
    assert train["precision"] == before["precision"] == "fp32"
    assert train["speedup"] == pytest.approx(train["images_per_s"] / before["images_per_s"])
    for row in (train, before):
        assert row["images_per_s"] > 0 and 0 < row["pct_of_peak"] and row["peak_memory_mb"] > 0
        assert row["model_flops_per_step"] > 0 and row["timing"]["repeats"] == 1
    shards, single = data["dataset"]
    assert (shards["case"], shards["batch"], single["case"], single["batch"]) == ("shards", 8, "one_at_a_time", 1)
    assert shards["images"] == single["images"] == 32 and shards["speedup_vs_one_at_a_time"] > 0
    assert 0 < shards["resume_check_ms_per_shard"] < 1e3
    assert "## Dataset tokenize" in (tmp_path / "bench.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["--size", "M"], "--size must be one of"),
    (["--sections", "peak,everything"], "--sections takes"),
    (["--forward-batches", "1,x"], "comma-separated integers"),
    (["--precision", "fp8"], "precision must be one of"),
    (["--device", "cuda"], "no CUDA device"),
    (["--sections", "train", "--train-configs", "nonesuch"], "no config file 'nonesuch'"),
])
def test_bad_bench_options_fail_in_one_line(tmp_path, args, message):
    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "bench.json").exists()


def test_auto_precision_is_bf16_only_where_it_is_fast(monkeypatch):
    import comit.devices as devices
    from comit.bench.setup import BenchSettings

    for units, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(devices, "cpu_has_bf16_units", lambda flags=None, units=units: units)
        assert BenchSettings(precision="auto").check().precision == expected


def test_the_baseline_step_encodes_the_global_crop_again(monkeypatch):
    """The bench's 2026-12-06 variant is the old code path: one more full-size encode a step."""
    from comit.bench.training import build_trainer, encode_global_crop_again
    from comit.train.config import load_config

    counts = []
    for old in (False, True):
        trainer = build_trainer(load_config("tiny", {"step.global_first_p": 1.0, "step.max_crops": 1,
                                                     "optim.batch_size": 2}))
        if old:
            encode_global_crop_again(trainer)
        calls, encode = [], trainer.model.vae.encode
        monkeypatch.setattr(trainer.model.vae, "encode", lambda pixels, encode=encode, calls=calls:
                            calls.append(pixels.shape[-1]) or encode(pixels))
        images = torch.rand(2, 3, 64, 64) * 2 - 1
        trainer.train_step(0, iter([{"image": images}]))
        counts.append(len(calls))
    assert counts[1] == counts[0] + 1


def test_bench_model_has_random_nonzero_heads():
    from comit.bench.setup import BenchSettings, build_model

    model = build_model(BenchSettings(size="tiny").check(), torch.device("cpu"))
    assert model.predictor.final_layer.linear.weight.abs().sum() > 0  # not DiT's zero init
    assert model.config.image_size == 64 and model.config.autoencoder.kind == "pixel"


def test_training_flops_count_backward_for_recorded_calls_only(tiny_model):
    """A call autograd records costs forward + 2x forward (backward); a no_grad call forward only."""
    x, message = torch.randn(2, 3, 64, 64), tiny_model.empty_message(2)
    with count_calls(tiny_model) as calls:
        with torch.no_grad():
            tiny_model.predictor(x, torch.rand(2), message, torch.zeros(2, 2), with_queries=False)
        tiny_model.predictor(x, torch.rand(2), message, torch.zeros(2, 2), with_queries=False)
    assert calls.transformer_grad == [False, True]
    forward = transformer_call_flops(tiny_model.predictor, 2, 64, False).total
    assert calls.training_flops(tiny_model) == forward + 3 * forward
