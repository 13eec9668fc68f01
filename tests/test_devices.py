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


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, True),   # AMD EPYC (Zen 4) and Intel with AVX-512 BF16
    ({"avx2", "amx_bf16", "amx_tile"}, True),     # Intel with AMX
    ({"fp", "asimd", "bf16"}, True),              # Arm with BF16
    ({"avx2", "fma"}, False),                     # AVX2 only: torch emulates bf16 (a step 16x slower)
    (set(), False),
])
def test_bf16_units_are_read_from_the_cpu_flags(flags, expected):
    from comit.devices import cpu_has_bf16_units

    assert cpu_has_bf16_units(flags) is expected


def test_auto_precision_follows_the_device(monkeypatch):
    import comit.devices as devices

    for units, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(devices, "cpu_has_bf16_units", lambda flags=None, units=units: units)
        assert devices.auto_precision("cpu") == expected
    assert devices.auto_precision(torch.device("cuda")) == "bf16"


def test_the_trainer_resolves_auto_precision(monkeypatch, tmp_path):
    import comit.devices as devices
    import comit.train.loop as loop
    from comit.train.config import load_config

    for units, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(devices, "cpu_has_bf16_units", lambda flags=None, units=units: units)
        trainer = loop.Trainer(load_config("tiny", {"loop.precision": "auto"}), tmp_path / expected, progress=False)
        assert trainer.precision() == expected and trainer.autocast is (expected == "bf16")
    pinned = loop.Trainer(load_config("tiny", {"loop.precision": "fp32"}), tmp_path / "pinned", progress=False)
    assert pinned.precision() == "fp32"
