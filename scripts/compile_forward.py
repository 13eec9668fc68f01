#!/usr/bin/env python
"""torch.compile of the B predictor on the CPU: compile time and speed-up over eager, interleaved.

    .venv/bin/python scripts/compile_forward.py      (hard mode, decoding call, batch 1, 2 threads)
"""
import sys, time, statistics, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from profile_forward import build_predictor, call_inputs
torch.set_num_threads(2)
p = build_predictor("B", "hard")
args, kw = call_inputs(p, 1, "decode")
compiled = torch.compile(p, dynamic=False)
with torch.inference_mode():
    t0 = time.perf_counter(); out_c = compiled(*args, **kw); print(f"compile + first call {time.perf_counter()-t0:.1f} s", flush=True)
    out_e = p(*args, **kw)
    print("max abs diff", (out_c.velocity - out_e.velocity).abs().max().item(), flush=True)
    te, tc = [], []
    for r in range(4):
        for name, f, acc in ((("e", p, te), ("c", compiled, tc)) if r % 2 == 0 else (("c", compiled, tc), ("e", p, te))):
            s = time.perf_counter(); f(*args, **kw); acc.append(time.perf_counter() - s)
    print(f"eager {1e3*statistics.median(te):.0f} ms compiled {1e3*statistics.median(tc):.0f} ms ratio {statistics.median(e/c for e,c in zip(te,tc)):.3f}x")
