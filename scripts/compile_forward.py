#!/usr/bin/env python
"""torch.compile of the B predictor on the CPU: compile time and speed-up over eager, interleaved.

    .venv/bin/python scripts/compile_forward.py      (hard mode, decoding call, batch 1, 2 threads)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from ab_forward import alternating_ratios  # noqa: E402
from profile_forward import build_predictor, call_inputs  # noqa: E402

REPEATS = 4


def main() -> None:
    torch.set_num_threads(2)
    predictor = build_predictor("B", "hard")
    args, kwargs = call_inputs(predictor, 1, "decode")
    compiled = torch.compile(predictor, dynamic=False)
    with torch.inference_mode():
        start = time.perf_counter()
        out_compiled = compiled(*args, **kwargs)
        print(f"compile + first call {time.perf_counter() - start:.1f} s", flush=True)
        out_eager = predictor(*args, **kwargs)
        print("max abs diff", (out_compiled.velocity - out_eager.velocity).abs().max().item(), flush=True)
        eager, fast = alternating_ratios(lambda: predictor(*args, **kwargs), lambda: compiled(*args, **kwargs),
                                         REPEATS)
    ratio = statistics.median(e / c for e, c in zip(eager, fast))
    print(f"eager {1e3 * statistics.median(eager):.0f} ms compiled {1e3 * statistics.median(fast):.0f} ms "
          f"ratio {ratio:.3f}x")


if __name__ == "__main__":
    main()
