"""Benchmarks on random weights: matmul peak, predictor forward, tokenize, detokenize, each fast
path against the plain path, and (when the training code is present) a training step.

The parts: ``setup`` (BenchSettings), ``suite`` (run_benchmark, write_results), ``sections`` (each
measurement). The command ``comit bench`` is ``comit.cli.bench``.
"""
