"""The shared ``--device`` rule."""

import pytest
import torch

from comit.devices import resolve_device


def test_auto_and_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["gpu", "mps0", "cudax"])
def test_unknown_names_fail_clearly(name):
    with pytest.raises(ValueError, match="must be auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_cuda_without_a_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda:0")


def test_torch_threads_sets_and_restores_even_on_error():
    from comit.devices import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="thread count must be >= 1"), torch_threads(0):
        pass
