#!/usr/bin/env python
"""Where one predictor forward's time goes, per op category (CPU).

    .venv/bin/python scripts/profile_forward.py                     # B, decode call, batch 1 and 4, both modes
    .venv/bin/python scripts/profile_forward.py --kind encode --threads 2

The predictor is built the way ``comit bench --size B`` builds it (random N(0, 0.02) weights, the
paper's geometry: 256-px images through the SD-VAE, a 32x32 latent, patch 2, 256 message tokens).
``decode`` is the call the decoding loop makes (full latent; queries dropped in hard mode, kept in
released mode), ``encode`` the crop-writing call (12x12 crop latent, queries, t = 1).

Each op is timed where it is dispatched (a TorchDispatchMode around every aten op), not with
torch.profiler: on this machine (torch 2.13, CPU) the profiler makes every op that writes a fresh
large tensor page-fault (seconds of system time per B call), doubling the call and inflating
GELU and copies several times over. The dispatch timer's total is printed next to the unprofiled
call's time so that the two can be compared; they should agree to a few per cent.

"GEMM efficiency" divides the per-token linears' FLOPs by their own time and compares that rate
with a 2048^3 GEMM timed interleaved with the forward in the same process, so that load from
other processes hits both.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from comit.bench.peak import gemm_flops, gemm_operands
from comit.bench.setup import BenchSettings, model_config
from comit.model.transformer import Transformer

GEMM = "GEMM per token (linear)"
PER_SAMPLE_GEMM = "GEMM per sample (adaLN, timestep MLP)"
# (category, aten op names); an op named nowhere lands in "other".
CATEGORIES = [
    ("attention (SDPA)", {"scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
                          "softmax", "_softmax", "matmul", "bmm"}),
    ("LayerNorm", {"layer_norm", "native_layer_norm"}),
    ("modulation, gates, residuals (mul/add/addcmul)", {"mul", "add", "addcmul", "add_", "mul_", "addcmul_"}),
    ("GELU", {"gelu"}),
    ("SiLU (adaLN input)", {"silu"}),
    ("copies (cat/contiguous/clone/copy)", {"cat", "contiguous", "clone", "copy_", "_to_copy", "to"}),
    ("views (transpose/permute/view/split/...)", {"transpose", "permute", "view", "reshape", "split",
                                                  "split_with_sizes", "chunk", "slice", "unsqueeze", "expand",
                                                  "as_strided", "select", "unbind", "flatten", "_unsafe_view",
                                                  "narrow", "t", "alias", "squeeze", "unflatten"}),
]
PER_SAMPLE_ROWS = 16  # a linear with at most this many input rows runs once per sample, not per token


class OpTimer(TorchDispatchMode):
    """Wall time and FLOPs of every aten op dispatched while active, by category."""

    def __init__(self):
        super().__init__()
        self.seconds: dict[str, float] = defaultdict(float)
        self.gemm_flops = 0.0
        self.gemm_shapes: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = time.perf_counter() - start
        name = func.overloadpacket.__name__
        if name == "linear":
            self.add_linear(args, elapsed)
        else:
            self.seconds[category_of(name)] += elapsed
        return out

    def add_linear(self, args, elapsed: float) -> None:
        x, weight = args[0], args[1]
        rows = x.numel() // x.shape[-1]
        if rows <= PER_SAMPLE_ROWS:
            self.seconds[PER_SAMPLE_GEMM] += elapsed
            return
        self.seconds[GEMM] += elapsed
        flops = 2 * rows * weight.shape[1] * weight.shape[0]
        self.gemm_flops += flops
        shape = self.gemm_shapes[(rows, weight.shape[1], weight.shape[0])]
        shape[0] += elapsed
        shape[1] += flops


def category_of(name: str) -> str:
    for category, names in CATEGORIES:
        if name in names:
            return category
    return "other"


def build_predictor(size: str, attention: str) -> Transformer:
    """The bench's predictor: the size's config, the bench's random N(0, 0.02) init."""
    kwargs = model_config(BenchSettings(size=size)).predictor_kwargs()
    predictor = Transformer(**{**kwargs, "attention": attention})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in predictor.named_parameters():
            if name != "pos_embed":
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return predictor.eval()


def call_inputs(predictor: Transformer, batch: int, kind: str) -> tuple[tuple, dict]:
    generator = torch.Generator().manual_seed(0)
    side = predictor.max_input_size if kind == "decode" else 12  # a 96-px crop's SD-VAE latent
    x = torch.randn(batch, predictor.in_channels, side, side, generator=generator)
    message = torch.randint(-2, 3, (batch, predictor.num_msg_tokens, predictor.msg_tokens_dim),
                            generator=generator).float() / 2
    offset = torch.rand(batch, 2, generator=generator) * 2 - 1
    # one time for the whole batch, as when tokenizing (t = 1) and decoding (a step's t)
    t = torch.full((batch,), 1.0 if kind == "encode" else 0.5)
    return (x, t, message, offset), {"with_queries": kind == "encode"}


def timed_calls(forward, repeats: int) -> OpTimer:
    """Per-op times summed over ``repeats`` calls, after one untimed call under the timer (its
    first use has one-off costs)."""
    with OpTimer():
        forward()
    with OpTimer() as timer:
        for _ in range(repeats):
            forward()
    return timer


def interleaved_medians(functions: dict, repeats: int) -> dict[str, float]:
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def report(title: str, timer: OpTimer, repeats: int, times: dict) -> None:
    total = sum(timer.seconds.values()) / repeats
    peak = gemm_flops(2048) / times["gemm"] / 1e9
    print(f"\n## {title}: timed call {1e3 * total:.0f} ms (unprofiled median {1e3 * times['forward']:.0f} ms); "
          f"2048^3 GEMM {peak:.0f} GFLOP/s")
    print("| category | ms | % of call |\n|---|---|---|")
    for category, seconds in sorted(timer.seconds.items(), key=lambda item: -item[1]):
        print(f"| {category} | {1e3 * seconds / repeats:.1f} | {100 * seconds / repeats / total:.1f} % |")
    gemm_s = timer.seconds[GEMM] / repeats
    rate = timer.gemm_flops / repeats / gemm_s / 1e9
    print(f"per-token GEMMs: {timer.gemm_flops / repeats / 1e9:.1f} GFLOP in {1e3 * gemm_s:.0f} ms = {rate:.0f} "
          f"GFLOP/s = {100 * rate / peak:.0f} % of the 2048^3 GEMM; the whole call at those FLOPs: "
          f"{100 * timer.gemm_flops / repeats / total / 1e9 / peak:.0f} %")
    for (m, k, n), (seconds, flops) in sorted(timer.gemm_shapes.items(), key=lambda item: -item[1][0]):
        print(f"  {m} x {k} x {n}: {1e3 * seconds / repeats:.1f} ms, {flops / seconds / 1e9:.0f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="B")
    parser.add_argument("--kind", choices=("decode", "encode"), default="decode")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--modes", default="hard,released")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row (and unprofiled calls)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    a, b = gemm_operands(torch.device("cpu"), torch.float32, 2048)
    print(f"size {args.size}, {args.kind} call, {args.threads} thread(s), torch {torch.__version__}")
    for mode in args.modes.split(","):
        predictor = build_predictor(args.size, mode)
        for batch in (int(value) for value in args.batches.split(",")):
            call_args, call_kwargs = call_inputs(predictor, batch, args.kind)

            def forward():
                return predictor(*call_args, **call_kwargs)

            with torch.inference_mode():
                forward()  # warm-up: masks, oneDNN primitives
                times = interleaved_medians({"forward": forward, "gemm": lambda: a @ b}, args.repeats)
                timer = timed_calls(forward, args.repeats)
            report(f"{mode}, batch {batch}", timer, args.repeats, times)


if __name__ == "__main__":
    main()
