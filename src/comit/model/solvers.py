"""ODE solvers for flow decoding: integrate dx/dt = v(x, t) from t = 0 (noise) to t = 1 (latent).

The time grid is ``linspace(0, 1, steps + 1)``. Euler is the paper's solver; Heun and midpoint are
second-order alternatives (two velocity evaluations per step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SOLVERS = ("euler", "heun", "midpoint")


def check_decoding(steps: int, cfg_weight: float) -> None:
    """Refuse a decoding schedule without steps or a negative guidance weight."""
    if steps < 1:
        raise ValueError(f"decoding steps must be >= 1, got {steps}")
    if cfg_weight < 0:
        raise ValueError(f"guidance weight must be >= 0, got {cfg_weight}")


def path_point(x1: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """x_t = t x1 + (1 - t) noise: the straight path from noise (t = 0) to the latent x1 (t = 1)
    whose velocity the transformer learns; ``t`` a number or [B], one per image."""
    tt = t.view(-1, *([1] * (x1.dim() - 1))) if torch.is_tensor(t) else t
    return tt * x1 + (1 - tt) * noise


def time_grid(num_steps: int, device=None) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, num_steps + 1, device=device)


def euler_step(velocity: VelocityFn, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    return x + (t1 - t0) * velocity(x, _batch(t0, x))


def heun_step(velocity: VelocityFn, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    dt = t1 - t0
    v0 = velocity(x, _batch(t0, x))
    v1 = velocity(x + dt * v0, _batch(t1, x))
    return x + dt * 0.5 * (v0 + v1)


def midpoint_step(velocity: VelocityFn, x: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
    dt = t1 - t0
    v0 = velocity(x, _batch(t0, x))
    return x + dt * velocity(x + 0.5 * dt * v0, _batch(t0 + 0.5 * dt, x))


STEPS = {"euler": euler_step, "heun": heun_step, "midpoint": midpoint_step}


def integrate(velocity: VelocityFn, noise: torch.Tensor, num_steps: int, solver: str = "euler",
              progress: Callable | None = None) -> torch.Tensor:
    """Carry ``noise`` at t = 0 to t = 1 in ``num_steps`` steps of ``solver``."""
    if solver not in STEPS:
        raise ValueError(f"unknown solver {solver!r}: use one of {SOLVERS}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    step = STEPS[solver]
    times = time_grid(num_steps, device=noise.device)
    x = noise
    for i in range(num_steps):
        x = step(velocity, x, times[i], times[i + 1])
        if progress is not None:
            progress()
    return x


def evaluation_times(num_steps: int, solver: str = "euler") -> torch.Tensor:
    """The distinct times [K] at which ``integrate`` on the CPU evaluates the velocity, found by a
    dry run on a scalar state, so that they are the very float32 values the steps compute."""
    seen: list[torch.Tensor] = []
    integrate(lambda x, t: seen.append(t[0]) or torch.zeros_like(x), torch.zeros(1), num_steps, solver)
    return torch.stack(seen).unique()


def _batch(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.expand(x.shape[0])
