import math

import pytest
import torch

from comit.model.guidance import APGuidance, guided_velocity, needs_unconditional
from comit.model.solvers import integrate, time_grid


def reference_apg(v_cond, v_uncond, running, w, momentum, threshold=2.5):
    """Spec section 5, written out per sample with plain loops over the batch."""
    out, new_running = [], []
    for vc, vu, r in zip(v_cond.double(), v_uncond.double(), running.double()):
        d = vc - vu
        r = d + momentum * r
        new_running.append(r)
        d = r * min(1.0, threshold / r.norm().item())
        v_hat = vc / vc.norm()
        d_orth = d - (d * v_hat).sum() * v_hat
        out.append(vc + (w - 1) * d_orth)
    return torch.stack(out).float(), torch.stack(new_running).float()


def test_apg_matches_the_spec_over_several_calls():
    g = torch.Generator().manual_seed(0)
    guidance = APGuidance(cfg_weight=7.5, momentum=-0.5)
    running = torch.zeros(3, 4, 5, 5)
    for _ in range(3):
        v_cond, v_uncond = torch.randn(2, 3, 4, 5, 5, generator=g)
        expected, running = reference_apg(v_cond, v_uncond, running, 7.5, -0.5)
        torch.testing.assert_close(guidance(v_cond, v_uncond), expected, atol=1e-5, rtol=1e-5)


def test_large_directions_are_clipped_to_norm_2_5():
    guidance = APGuidance(cfg_weight=2.0, momentum=0.0)
    v_cond = torch.zeros(1, 2, 2, 2)
    v_cond[0, 0, 0, 0] = 1.0
    v_uncond = v_cond.clone()
    v_uncond[0, 1, 0, 0] = -100.0  # d orthogonal to v_cond, norm 100
    out = guidance(v_cond, v_uncond)
    assert (out - v_cond).norm().item() == pytest.approx(2.5, rel=1e-5)


@pytest.mark.parametrize("w,needed", [(0.0, False), (1.0, False), (7.5, True), (0.5, True)])
def test_unconditional_pass_only_when_it_matters(w, needed):
    assert needs_unconditional(w) is needed
    calls = []

    def velocity_of(x, t, message, offset):
        calls.append(x.shape[0])
        return x * message.mean() + offset.sum()

    message, empty = torch.ones(2, 3, 6), torch.zeros(2, 3, 6)
    v = guided_velocity(velocity_of, message, empty, torch.zeros(2, 2), w)
    out = v(torch.randn(2, 4, 2, 2), torch.zeros(2))
    assert calls == ([4] if needed else [2])  # cond + uncond batched together
    assert out.shape == (2, 4, 2, 2)


def test_time_grid():
    assert time_grid(4).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_euler_is_exact_for_a_constant_velocity():
    target, noise = torch.randn(2, 3), torch.randn(2, 3)
    out = integrate(lambda x, t: target - noise, noise, 1, "euler")
    torch.testing.assert_close(out, target)


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2), ("midpoint", 2)])
def test_solver_convergence_order(solver, order):
    """dx/dt = x from x(0) = 1 gives e at t = 1; halving the step divides the error by 2^order."""
    x0 = torch.ones(1, 1, dtype=torch.float64)
    errors = [abs(integrate(lambda x, t: x, x0, n, solver).item() - math.e) for n in (8, 16)]
    assert errors[0] / errors[1] == pytest.approx(2 ** order, rel=0.15)


def test_solvers_see_the_batch_time():
    seen = []
    integrate(lambda x, t: seen.append(t.clone()) or torch.zeros_like(x), torch.zeros(3, 2), 2, "midpoint")
    assert [t.tolist() for t in seen] == [[0.0] * 3, [0.25] * 3, [0.5] * 3, [0.75] * 3]


@pytest.mark.parametrize("solver,steps,message", [("rk4", 2, "unknown solver"), ("euler", 0, "num_steps"),
                                                  ("euler", 2.5, "num_steps")])
def test_bad_solver_arguments(solver, steps, message):
    with pytest.raises(ValueError, match=message):
        integrate(lambda x, t: x, torch.zeros(1, 1), steps, solver)
