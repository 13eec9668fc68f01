"""The probe's controls: the true scene as a message (it holds every answer) and random messages (they
hold none); the probe reads the first and not the second; chance and intervals."""

from __future__ import annotations

import pytest
import torch

from comit.data import build_dataset
from comit.data.shapes import COLORS, SHAPES, SIZES
from comit.eval.protocol import batches, first_items
from comit.metrics.probe_controls import (object_cells, random_codes, random_ids, scene_codes, scene_ids,
                                       scene_vocab_size)
from comit.eval.run_probe import (Messages, ProbeSettings, annotations, controls_verdict, prior_guess,
                                  probe_sources, wilson_interval, with_interval)

LENGTH, CELLS = 16, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def shapes_meta(count: int, split: str) -> dict[str, torch.Tensor]:
    dataset = first_items(build_dataset("shapes", 32, split=split), count)
    metas = [annotations(batch) for batch in batches(dataset, 64, "annotations", False)]
    return {key: torch.cat([m[key] for m in metas]) for key in metas[0]}


@pytest.fixture(scope="module")
def meta():
    return shapes_meta(64, "val")


def test_scene_codes_hold_each_object_once_in_its_own_slot(meta):
    codes = scene_codes(meta, LENGTH, CELLS, seed=0)
    assert codes.shape == (64, LENGTH, len(COLORS) + len(SHAPES) + len(SIZES) + 2 * CELLS + 1)
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    filled = codes[..., -1] > 0
    assert torch.equal(filled.sum(1), meta["valid"].sum(1))  # one token per object, the rest empty
    cells = object_cells(meta["center"], CELLS)
    for image in range(8):
        tokens = codes[image][filled[image]]
        found = {(int(t[:6].argmax()), int(t[6:11].argmax()), int(t[11:13].argmax()), int(t[13:17].argmax()),
                  int(t[17:21].argmax())) for t in tokens}
        wanted = {(int(meta["color"][image, k]), int(meta["shape"][image, k]), int(meta["size"][image, k]),
                   int(cells[image, k, 0]), int(cells[image, k, 1])) for k in meta["valid"][image].nonzero()[:, 0]}
        assert found == wanted
        assert (tokens[:, :-1] > 0).sum(1).tolist() == [5] * len(tokens)  # exactly one value per field
    assert (codes[~filled] == -1).all()


def test_scene_slots_are_random_but_seeded(meta):
    same, again, other = (scene_codes(meta, LENGTH, CELLS, seed=s) for s in (3, 3, 4))
    assert torch.equal(same, again) and not torch.equal(same, other)
    # The slot says nothing: over many images every slot holds objects.
    assert (scene_codes(meta, LENGTH, CELLS, seed=0)[..., -1] > 0).any(0).all()


def test_scene_ids_number_the_same_tokens(meta):
    ids = scene_ids(meta, LENGTH, CELLS, seed=0)
    codes = scene_codes(meta, LENGTH, CELLS, seed=0)
    assert torch.equal(ids > 0, codes[..., -1] > 0)  # the same slots
    assert int(ids.max()) < scene_vocab_size(CELLS)
    token = ids[ids > 0] - 1
    colour = token // (CELLS * CELLS) // (len(SHAPES) * len(SIZES))
    assert torch.equal(colour, codes[ids > 0][:, :len(COLORS)].argmax(1))


def test_random_controls_lie_on_the_lattice_and_ignore_the_images():
    levels = (8, 5, 3)
    codes = random_codes(200, LENGTH, levels, seed=0)
    for channel, level in enumerate(levels):
        assert torch.allclose(codes[..., channel].unique(), torch.linspace(-1, 1, level))
    assert torch.equal(codes, random_codes(200, LENGTH, levels, seed=0))
    ids = random_ids(200, LENGTH, 64000, seed=0)
    assert 0 <= int(ids.min()) and int(ids.max()) < 64000


def test_the_probe_reads_the_scene_and_not_random_tokens():
    # A small version of what every probe run reports: far above chance on the scene, chance on noise.
    train_meta, test_meta = shapes_meta(1000, "train"), shapes_meta(200, "val")
    empty = Messages(torch.zeros(1000, LENGTH, dtype=torch.long), torch.zeros(1000, LENGTH, 6), train_meta, 64000,
                     (8, 8, 8, 5, 5, 5))
    test = Messages(torch.zeros(200, LENGTH, dtype=torch.long), torch.zeros(200, LENGTH, 6), test_meta, 64000,
                    (8, 8, 8, 5, 5, 5))
    probe = ProbeSettings(tasks=("semantic",))  # the defaults
    sources = {kind: (empty.control(kind, CELLS, seed=1), test.control(kind, CELLS, seed=2))
               for kind in ("scene", "random")}
    rows, history, _ = probe_sources(sources, probe, [], progress=False)
    scores = {r["messages"]: r["top1"] for r in rows}
    chance = rows[0]["prior_top1"]
    assert scores["scene"] > chance + 0.5 and abs(scores["random"] - chance) < 0.08, (scores, chance)
    verdict = controls_verdict(rows)[0]
    assert verdict["probe_reads"] is True and verdict["random_at_chance"] is True
    assert {h["messages"] for h in history} == {"scene", "random"}


def test_prior_guess_is_the_training_majority_scored_on_the_test():
    train = torch.tensor([2, 2, 2, 1, 1, 0])
    test = torch.tensor([0, 0, 0, 2])
    prior = prior_guess(train, test, num_classes=3)
    assert prior["prior_top1"] == 0.25  # "2" is right once in four
    assert prior["prior_top5"] == 1.0  # top-3 of 3 classes: always


def test_wilson_interval():
    low, high = wilson_interval(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0.0, 10)[0] == 0.0 and 0 < wilson_interval(0.0, 10)[1] < 0.35


def test_the_interval_counts_each_test_image_once():
    """The long run's relational negative control at seed 1: random tokens scored 0.225 on 2,672
    questions about 1,000 images. Counted over questions, its interval (0.210-0.242) missed the
    chance band (0.249-0.251) — a verdict the data cannot give, since a question and its mirror ask
    about the same picture; counted over images it meets the band, and one sample an image is as before."""
    base = {"task": "relational", "test": "test", "primary": "top1", "num_classes": 4, "top1": 0.225, "top5": 1.0,
            "prior_top1": 0.249, "prior_top5": 1.0, "majority_top1": 0.251, "majority_top5": 1.0}
    by_samples = with_interval({**base, "test_samples": 2672})
    by_images = with_interval({**base, "test_samples": 2672, "test_images": 1000})
    assert by_samples["ci95_high"] < 0.249 < by_images["ci95_high"]
    assert (by_images["ci95_low"], by_images["ci95_high"]) == wilson_interval(0.225, 1000)
    assert with_interval({**base, "test_samples": 500, "test_images": 500})["ci95_low"] == wilson_interval(0.225, 500)[0]
    (entry,) = controls_verdict([{**base, "messages": "random", **by_images}])
    assert entry["random_at_chance"]
    (entry,) = controls_verdict([{**base, "messages": "random", **by_samples}])
    assert not entry["random_at_chance"]
