#!/usr/bin/env python
"""Speed-up of the working tree's predictor over an earlier commit's, timed interleaved in one process.

    .venv/bin/python scripts/ab_forward.py --before b74aa8a               # B decode call, batch 1 and 4, both modes
    .venv/bin/python scripts/ab_forward.py --before b74aa8a --kind encode --threads 2
    .venv/bin/python scripts/ab_forward.py --before b74aa8a --loop --batches 1   # 10 Euler steps at w = 7.5

``src/comit/model/transformer.py`` at ``--before`` is loaded beside the current one; both predictors
get the same weights (the bench's random B, see scripts/profile_forward.py) and the same inputs,
and are called alternately (before, after, after, before, ...) so that load from other processes
hits both sides alike. Reported: median time of each side, the median of the per-round ratios,
and the largest difference of the outputs.

``--loop`` times the decoding loop instead (10 Euler steps with guidance at w = 7.5, the VAE decode
left out, so cond and uncond run as one call of 2B): the old predictor, the current one without
its ConditioningTable, and the current one with it.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from comit.model.guidance import guided_velocity
from comit.model.solvers import evaluation_times, integrate

sys.path.insert(0, str(Path(__file__).parent))
from profile_forward import build_predictor, call_inputs  # noqa: E402

TRANSFORMER = "src/comit/model/transformer.py"


def transformer_at(revision: str):
    """The transformer module as it was at ``revision`` (it imports nothing from the package)."""
    source = subprocess.run(["git", "show", f"{revision}:{TRANSFORMER}"], check=True, capture_output=True,
                            text=True, cwd=Path(__file__).parent.parent).stdout
    spec = importlib.util.spec_from_loader(f"transformer_{revision}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"{revision}:{TRANSFORMER}", "exec"), module.__dict__)
    return module


def alternating_ratios(before, after, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per call of each side; the side that goes first alternates round by round."""
    times = {"before": [], "after": []}
    sides = [("before", before), ("after", after)]
    for round_index in range(repeats):
        for name, function in sides if round_index % 2 == 0 else sides[::-1]:
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times["before"], times["after"]


def max_difference(a, b) -> float:
    diffs = [(a.velocity - b.velocity).abs().max().item()]
    if a.message is not None:
        diffs.append((a.message - b.message).abs().max().item())
    return max(diffs)


LOOP_STEPS, LOOP_WEIGHT = 10, 7.5


def decoding_loop(predictor, x, message, offset, table=None):
    """detokenize's loop without the VAE decode, on a bare predictor."""
    def velocity_of(x_, t, message_, offset_):
        kwargs = {"conditioning": table.lookup(t)} if table is not None else {}
        return predictor(x_, t, message_, offset_, with_queries=False, **kwargs).velocity
    velocity = guided_velocity(velocity_of, message, torch.zeros_like(message), offset, LOOP_WEIGHT)
    return integrate(velocity, x, LOOP_STEPS, "euler")


def loop_rows(mode: str, batch: int, before, after, repeats: int) -> None:
    (x, _, message, offset), _ = call_inputs(after, batch, "decode")
    with torch.inference_mode():
        table = after.conditioning_table(evaluation_times(LOOP_STEPS))
        sides = {"old transformer": lambda: decoding_loop(before, x, message, offset),
                 "no table": lambda: decoding_loop(after, x, message, offset),
                 "fused + table": lambda: decoding_loop(after, x, message, offset, table)}
        outputs = {name: function() for name, function in sides.items()}
        for plain in ("old transformer", "no table"):
            t_before, t_after = alternating_ratios(sides[plain], sides["fused + table"], repeats)
            ratio = statistics.median(b / a for b, a in zip(t_before, t_after))
            diff = (outputs[plain] - outputs["fused + table"]).abs().max().item()
            print(f"| {mode} | {batch} | loop: {plain} vs fused + table | {1e3 * statistics.median(t_before):.0f} | "
                  f"{1e3 * statistics.median(t_after):.0f} | {ratio:.3f}x | {diff:.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision of the plain path")
    parser.add_argument("--size", default="B")
    parser.add_argument("--kind", choices=("decode", "encode"), default="decode")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--modes", default="hard,released")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--loop", action="store_true", help="time the decoding loop, not one call")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    old = transformer_at(args.before)
    print(f"size {args.size}, {args.kind} call, {args.threads} thread(s): {args.before} vs working tree")
    print("| mode | batch | what | before ms | after ms | speed-up (median of rounds) | max abs diff |\n"
          "|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        after = build_predictor(args.size, mode)
        before = old.Transformer(**after.config()).eval()
        before.load_state_dict(after.state_dict())
        for batch in (int(value) for value in args.batches.split(",")):
            if args.loop:
                loop_rows(mode, batch, before, after, args.repeats)
                continue
            call_args, call_kwargs = call_inputs(after, batch, args.kind)
            with torch.inference_mode():
                diff = max_difference(before(*call_args, **call_kwargs), after(*call_args, **call_kwargs))
                t_before, t_after = alternating_ratios(lambda: before(*call_args, **call_kwargs),
                                                       lambda: after(*call_args, **call_kwargs), args.repeats)
            ratio = statistics.median(b / a for b, a in zip(t_before, t_after))
            print(f"| {mode} | {batch} | {args.kind} call | {1e3 * statistics.median(t_before):.0f} | "
                  f"{1e3 * statistics.median(t_after):.0f} | {ratio:.3f}x | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
