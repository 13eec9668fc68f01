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
