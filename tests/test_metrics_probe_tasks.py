"""Probe tasks on hand-made annotations, question tokens, and the compact id vocabulary."""

from __future__ import annotations

import pytest
import torch

from comit.data import RELATIONS, build_dataset
from comit.data.shapes import SHAPES
from comit.metrics.probe import AttentionProbe, append_question, train_probe
from comit.metrics.probe_tasks import (NUM_CONCEPTS, build_tasks, compositional_task, held_out_pairs, pair_table,
                                    relational_task, semantic_task)
from comit.eval.run_probe import CompactIds, annotations


pytestmark = pytest.mark.usefixtures("one_thread")


def _meta(objects: list[list[tuple[int, int, int]]], slots: int = 3) -> dict:
    """Annotations of images given as lists of (colour, shape, area); objects sit left to right."""
    n = len(objects)
    meta = {"valid": torch.zeros(n, slots, dtype=torch.bool), "shape": torch.full((n, slots), -1),
            "color": torch.full((n, slots), -1), "size": torch.full((n, slots), -1),
            "area": torch.zeros(n, slots, dtype=torch.long), "relations": torch.full((n, slots, slots), -1)}
    for i, image in enumerate(objects):
        for k, (color, shape, area) in enumerate(image):
            meta["valid"][i, k], meta["color"][i, k], meta["shape"][i, k] = True, color, shape
            meta["size"][i, k], meta["area"][i, k] = 0, area
            for j in range(len(image)):
                if j != k:
                    meta["relations"][i, k, j] = RELATIONS.index("left of" if k < j else "right of")
    return meta


def concept(color: int, shape: int) -> int:
    return color * len(SHAPES) + shape


def test_semantic_labels_the_largest_object():
    meta = _meta([[(0, 1, 10), (2, 3, 50)], [(4, 0, 7)]])
    task = semantic_task(meta, meta)
    assert task.train.label.tolist() == [concept(2, 3), concept(4, 0)]
    assert task.classes[concept(2, 3)] == "blue diamond"


def test_relational_questions_name_both_objects_and_skip_ambiguous_pairs():
    # Image 0: a red circle left of a green square; image 1: two red circles, a cross, a square.
    meta = _meta([[(0, 0, 5), (1, 1, 5)], [(0, 0, 5), (0, 0, 5), (2, 4, 5), (2, 1, 5)]], slots=4)
    task = relational_task(meta, meta)
    answers = {(int(i), *q.tolist()): RELATIONS[int(y)]
               for i, q, y in zip(task.train.image, task.train.question, task.train.label)}
    assert answers[(0, concept(0, 0), concept(1, 1))] == "left of"
    assert answers[(0, concept(1, 1), concept(0, 0))] == "right of"
    # "the red circle" names no single object in image 1: only the cross and square are asked about.
    image1 = task.train.image == 1
    assert int(image1.sum()) == 2
    assert sorted(map(tuple, task.train.question[image1].tolist())) == sorted(
        [(concept(2, 4), concept(2, 1)), (concept(2, 1), concept(2, 4))])
    assert task.question_vocab == NUM_CONCEPTS and task.question_length == 2


def test_held_out_pairs_are_a_seeded_fraction_of_unordered_pairs():
    held = held_out_pairs(0.2, seed=1)
    assert int(held.sum()) == round(0.2 * NUM_CONCEPTS * (NUM_CONCEPTS + 1) / 2)
    low, high = held.nonzero()[:, 0] // NUM_CONCEPTS, held.nonzero()[:, 0] % NUM_CONCEPTS
    assert (low <= high).all()  # unordered: stored once, low concept first
    assert torch.equal(held, held_out_pairs(0.2, seed=1)) and not torch.equal(held, held_out_pairs(0.2, seed=2))
    with pytest.raises(ValueError, match="fraction"):
        held_out_pairs(1.0, 0)


def test_compositional_split_keeps_held_out_pairs_out_of_training():
    data = build_dataset("shapes", 32, split="val")
    meta = annotations(torch.utils.data.default_collate([data[i] for i in range(120)]))
    task = compositional_task(meta, meta, holdout_fraction=0.3, seed=0)
    held = held_out_pairs(0.3, 0)
    pairs = pair_table(meta)
    in_held = held[pairs.clamp(min=0)] & (pairs >= 0)
    train_images = torch.unique(task.train.image)
    assert not in_held[train_images].any()
    unseen = task.tests["unseen_pairs"]
    assert len(unseen) > 0 and in_held[torch.unique(unseen.image)].flatten(1).any(1).all()
    seen_images = torch.unique(task.tests["seen_pairs"].image)
    assert not in_held[seen_images].any() and (meta["valid"][seen_images].sum(1) >= 2).all()
    # Every sample is an object's own concept.
    for samples in (task.train, unseen):
        assert set(samples.label.tolist()) <= set(range(NUM_CONCEPTS))


def test_tasks_need_the_right_annotations():
    labels = {"labels": torch.tensor([[0], [1]])}
    with pytest.raises(ValueError, match="needs object annotations"):
        build_tasks(["relational"], labels, labels)
    with pytest.raises(ValueError, match="unknown probe task"):
        build_tasks(["colour"], labels, labels)
    with pytest.raises(ValueError, match="no labels"):
        build_tasks(["classes"], {"labels": torch.full((2, 1), -1)}, labels)


def test_a_question_probe_answers_per_question():
    # The message holds two "object" ids; the question names one of them and the answer is its
    # position (0 or 1): unlearnable without reading both question and message.
    g = torch.Generator().manual_seed(0)

    def toy(n):
        ids = torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(n)])
        which = torch.randint(0, 2, (n,), generator=g)
        question = ids.gather(1, which[:, None])
        return append_question(ids, question), which

    (x, y), (vx, vy) = toy(512), toy(256)
    assert x.shape == (512, 3)
    result = train_probe(x, y, vx, vy, 2, vocab_size=8, dim=32, heads=2, epochs=25, batch_size=64, lr=3e-3,
                         question_vocab=8, question_length=1, progress=False, num_positions=2)
    assert result.top1 >= 0.95


def test_question_codes_and_bad_questions():
    codes = torch.rand(2, 4, 6)
    joined = append_question(codes, torch.tensor([[3, 1], [0, 2]]))
    assert joined.shape == (2, 6, 6) and joined[:, 4:, 0].tolist() == [[3.0, 1.0], [0.0, 2.0]]
    probe = AttentionProbe(4, input="codes", num_positions=4, dim=16, heads=2, question_vocab=4, question_length=2)
    assert probe(joined).shape == (2, 4)
    with pytest.raises(ValueError, match=r"question ids must lie in \[0, 4\)"):
        probe(append_question(codes, torch.tensor([[4, 0], [0, 0]])))
    with pytest.raises(ValueError, match="both be > 0"):
        AttentionProbe(2, question_vocab=3)


def test_compact_ids_renumber_and_map_unseen_ids_together():
    vocabulary = CompactIds(torch.tensor([[50, 7], [7, 900]]))
    assert vocabulary.size == 4
    assert vocabulary(torch.tensor([[7, 50, 900, 8, 64000]])).tolist() == [[0, 1, 2, 3, 3]]


def test_constant_guess_scores_by_hand():
    from comit.eval.run_probe import constant_guess

    labels = torch.tensor([2, 2, 2, 0, 1, 3, 4, 5, 5, 6])  # 2 x3, 5 x2, then singles
    scores = constant_guess(labels, num_classes=8)
    assert scores["majority_top1"] == pytest.approx(0.3)
    assert scores["majority_top5"] == pytest.approx(0.8)  # 3 + 2 + three singles of 10
    assert constant_guess(torch.tensor([0, 1, 1]), 2)["majority_top5"] == 1.0  # k = min(5, classes)
