"""Attention probe on toy messages: learns a separable task, not a shuffled one, and repeats."""

from __future__ import annotations

import math

import pytest
import torch

import comit.metrics.probe as probe_module
from comit.metrics.probe import AttentionProbe, evaluate_probe, split_indices, train_probe

CLASSES, LENGTH, VOCAB = 4, 8, 16
SMALL = dict(dim=32, heads=2, vocab_size=VOCAB, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random messages whose class is the id at position 0 (ids 0..CLASSES-1 there)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    ids[:, 0] = labels
    return ids, labels


def test_separable_toy_is_learned():
    (x, y), (vx, vy) = _toy(512, 0), _toy(256, 1)
    result = train_probe(x, y, vx, vy, CLASSES, epochs=15, batch_size=64, lr=3e-3, **SMALL)
    assert result.top1 >= 0.95
    assert result.top5 == 1.0  # k = min(5, 4) = 4 classes: always a hit
    assert evaluate_probe(result.model, vx, vy)["top1"] == result.top1


def test_shuffled_labels_stay_near_chance():
    (x, _), (vx, _) = _toy(512, 0), _toy(256, 1)
    g = torch.Generator().manual_seed(2)
    y, vy = torch.randint(0, CLASSES, (512,), generator=g), torch.randint(0, CLASSES, (256,),
                                                                          generator=g)
    result = train_probe(x, y, vx, vy, CLASSES, epochs=6, batch_size=64, lr=3e-3, patience=6,
                         **SMALL)
    p = 1 / CLASSES
    std = math.sqrt(p * (1 - p) / len(vy))
    # Early stopping picks the best of several epochs, a slight upward bias: allow 4 sigma.
    assert abs(result.top1 - p) < 4 * std


def _codes(ids: torch.Tensor) -> torch.Tensor:
    """FSQ-style codes of ids with levels (4, 4): two base-4 digits scaled to [-1, 1]."""
    digits = torch.stack([ids % 4, ids // 4], dim=-1).float()
    return digits / 1.5 - 1


def test_codes_input_path():
    (ids, labels), (vids, vlabels) = _toy(512, 0), _toy(256, 1)
    result = train_probe(_codes(ids), labels, _codes(vids), vlabels, CLASSES, input="codes",
                         epochs=15, batch_size=64, lr=3e-3, **SMALL)
    assert result.model.input == "codes"
    assert result.top1 >= 0.9
    with pytest.raises(ValueError, match="float codes"):
        result.model(vids)


def test_early_stopping_restores_the_best_epoch(monkeypatch):
    # Script the validation curve so the best epoch (2) is known and later epochs are worse.
    curve = iter([0.3, 0.6, 0.5, 0.4, 0.2, 0.1])
    monkeypatch.setattr(probe_module, "evaluate_probe",
                        lambda *args, **kwargs: {"top1": next(curve), "top5": 1.0})
    (x, y), (vx, vy) = _toy(128, 0), _toy(64, 1)
    common = dict(batch_size=32, patience=2, schedule="constant", **SMALL)
    result = train_probe(x, y, vx, vy, CLASSES, epochs=6, **common)
    assert (result.best_epoch, result.top1) == (2, 0.6)
    assert len(result.history) == 4  # stopped `patience` epochs after the best
    # The returned weights are those after epoch 2, i.e. of a run that ends there.
    rising = iter([0.3, 0.6])
    monkeypatch.setattr(probe_module, "evaluate_probe",
                        lambda *args, **kwargs: {"top1": next(rising), "top5": 1.0})
    two_epochs = train_probe(x, y, vx, vy, CLASSES, epochs=2, **common).model.state_dict()
    restored = result.model.state_dict()
    assert all(torch.equal(restored[k], two_epochs[k]) for k in restored)


def test_training_is_deterministic_given_seed():
    (x, y), (vx, vy) = _toy(128, 0), _toy(64, 1)
    runs = [train_probe(x, y, vx, vy, CLASSES, epochs=2, batch_size=32, dropout=0.1, seed=seed,
                        **SMALL) for seed in (5, 5, 6)]
    first, again, other = (r.model.state_dict() for r in runs)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert runs[0].history == runs[1].history
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_split_indices_is_a_seeded_partition():
    train, val = split_indices(10, 0.3, seed=0)
    assert len(val) == 3 and len(train) == 7
    assert sorted(torch.cat([train, val]).tolist()) == list(range(10))
    assert torch.equal(split_indices(10, 0.3, seed=0)[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(10, 1.0)


def test_probe_rejects_wrong_inputs():
    probe = AttentionProbe(3, vocab_size=VOCAB, num_positions=4, dim=16, heads=2)
    assert probe(torch.randint(0, VOCAB, (2, 4))).shape == (2, 3)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 16\)"):
        probe(torch.full((2, 4), VOCAB))
    with pytest.raises(ValueError, match="exceeds num_positions"):
        probe(torch.randint(0, VOCAB, (2, 5)))
    with pytest.raises(ValueError, match="labels must lie"):
        train_probe(torch.zeros(4, 4, dtype=torch.long), torch.tensor([0, 1, 2, 3]),
                    torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 1]), 3, **SMALL)
