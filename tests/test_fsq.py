import pytest
import torch

from comit.model.fsq import FSQ


def test_paper_codebook_and_basis():
    fsq = FSQ()
    assert fsq.codebook_size == 64000
    assert fsq._basis.tolist() == [1, 8, 64, 512, 2560, 12800]


def test_empty_message_is_index_32000():
    fsq = FSQ()
    m0 = fsq.empty_message(2, 3)
    assert m0.shape == (2, 3, 6)
    assert torch.equal(m0[0, 0], torch.tensor([-1.0, -1.0, 0.0, 0.0, 0.0, 0.0]))
    assert torch.equal(fsq.codes_to_indices(m0), torch.full((2, 3), 32000))


@pytest.mark.parametrize("levels", [[8, 8, 8, 5, 5, 5], [7, 5, 5, 5], [4, 3], [2, 2, 2]])
def test_ids_and_codes_round_trip(levels):
    fsq = FSQ(levels)
    ids = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(ids)
    assert codes.min() >= -1 and codes.max() <= 1
    assert torch.equal(fsq.codes_to_indices(codes), ids)
    # quantising a code gives the code back
    assert torch.equal(fsq.codes_to_indices(fsq(_inverse(fsq, codes))), ids)


def _inverse(fsq, codes):
    """A raw vector whose bounded value is exactly the level (the centre of the rounding bin)."""
    target = codes * fsq._half_levels + fsq._offset
    return torch.atanh(target / fsq._half_width) - fsq._shift


def test_first_dimension_is_least_significant():
    fsq = FSQ([8, 5])
    codes = fsq.indices_to_codes(torch.tensor([1, 8]))
    # id 1 moves the first digit, id 8 the second
    assert fsq.codes_to_indices(codes).tolist() == [1, 8]
    assert codes[0, 0] == (1 - 4) / 4 and codes[0, 1] == (0 - 2) / 2
    assert codes[1, 0] == (0 - 4) / 4 and codes[1, 1] == (1 - 2) / 2


def test_levels_are_exact_counts():
    fsq = FSQ([8, 5])
    z = torch.linspace(-20, 20, 20001)[:, None].expand(-1, 2)
    codes = fsq(z)
    assert codes[:, 0].unique().numel() == 8
    assert codes[:, 1].unique().numel() == 5


def test_straight_through_gradient():
    fsq = FSQ()
    z = torch.randn(4, 6, requires_grad=True)
    fsq(z).sum().backward()
    expected = torch.autograd.grad(fsq.bound(z).sum() / 1, z)[0] / fsq._half_levels
    assert torch.allclose(z.grad, expected)


def test_identity_straight_through_keeps_the_forward_and_a_gradient_for_saturated_values():
    bounded, identity = FSQ(), FSQ(straight_through="identity")
    z = torch.tensor([[0.1, -0.3, 8.0, -9.0, 0.0, 12.0]], requires_grad=True)
    assert torch.equal(bounded(z), identity(z))
    (grad_bounded,) = torch.autograd.grad(bounded(z).sum(), z)
    (grad_identity,) = torch.autograd.grad(identity(z).sum(), z)
    assert grad_bounded[0, 2:4].abs().max() < 1e-5, "the tanh bound is flat out there"
    assert torch.allclose(grad_identity, (identity._half_width / identity._half_levels).expand_as(z))
    with pytest.raises(ValueError, match="straight_through"):
        FSQ(straight_through="linear")


def test_drop_quantization_passes_continuous_values_in_training_only():
    fsq = FSQ(drop_quantization_p=1.0)
    z = torch.randn(3, 5, 6)
    fsq.train()
    continuous = fsq(z)
    assert torch.allclose(continuous, fsq.bound(z) / fsq._half_levels)
    fsq.eval()
    assert torch.equal(fsq(z) * fsq._half_levels, torch.round(fsq(z) * fsq._half_levels))


def test_token_corruption_replaces_about_the_requested_fraction():
    torch.manual_seed(0)
    fsq = FSQ(corrupt_p=0.3).train()
    z = torch.randn(64, 256, 6)
    clean = fsq.eval()(z)
    noisy = fsq.train()(z)
    changed = (fsq.codes_to_indices(noisy) != fsq.codes_to_indices(clean)).float().mean().item()
    assert 0.25 < changed < 0.32  # a replaced token may land on its own code (1/64000)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="levels"):
        FSQ([1, 8])
    with pytest.raises(ValueError, match="corrupt_p"):
        FSQ(corrupt_p=1.5)
    with pytest.raises(ValueError, match=r"\[0, 64000\)"):
        FSQ().indices_to_codes(torch.tensor([64000]))
    with pytest.raises(ValueError, match="last dimension"):
        FSQ()(torch.zeros(2, 5))
