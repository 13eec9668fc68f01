"""Benchmarks on random weights: matmul peak, predictor forward, tokenize, detokenize, each fast
path against the plain path, and (when the training code is present) a training step."""

from .setup import BenchSettings
from .suite import run_benchmark, write_results

__all__ = ["BenchSettings", "run_benchmark", "write_results"]
