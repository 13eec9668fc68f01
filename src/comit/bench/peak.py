"""The machine's matmul peak, measured in the same run as the model it is compared with.

A square GEMM (2048³ on CPU, 8192³ on GPU; 1024³ for the tiny size) in the compute dtype of the run is what a dense
transformer can at best approach; "% of peak" elsewhere divides achieved GFLOP/s by this.
"""

from __future__ import annotations

import torch

from .timing import Timing


def default_gemm_size(device: torch.device, quick: bool = False) -> int:
    """8192³ on GPU, 2048³ on CPU; 1024³ for quick runs (the tiny size), still near peak on a CPU."""
    if device.type == "cuda":
        return 8192
    return 1024 if quick else 2048


def gemm_operands(device: torch.device, dtype: torch.dtype, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    return a, b


def gemm_flops(size: int) -> int:
    return 2 * size ** 3


def gflops(flops: float, timing: Timing) -> dict:
    """GFLOP/s at the median time, and at the slowest and fastest repeat."""
    return {"median": flops / timing.median_s / 1e9, "low": flops / timing.max_s / 1e9,
            "high": flops / timing.min_s / 1e9}
