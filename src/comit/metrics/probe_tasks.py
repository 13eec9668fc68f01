"""Probe tasks: which question each sample asks of which message, and its answer.

A task turns the annotations of the probe-training images and of the test images into samples
``(message index, optional question ids, label)``; the probe then reads the message (and the
question) and predicts the label. Tasks on the built-in shapes data:

* ``semantic`` — the colour and shape of the largest object (30 classes; the analogue of
  ImageNet classification: what the image is mainly of). Top-1.
* ``compositional`` — one sample per object, label its colour+shape. A seeded fraction of the
  unordered pairs of colour+shape concepts is held out: probe training uses only images in which
  no held-out pair occurs together, the test scores the objects of test images that show a
  held-out pair (``unseen_pairs``; top-5, as the paper's COCO task, since several objects are
  right answers), next to test images with seen pairs only (``seen_pairs``).
* ``relational`` — for each ordered pair of objects whose concepts occur once in the image
  (so a name picks out one object), the question names both ("where is <a> relative to <b>?") and the answer is one of left of / right of / above /
  below. Top-1, as the paper's Visual Genome task.

On other data: ``classes`` — one sample per (image, label) from class sub-folders or a labels
file; several labels per image make several samples (top-5 then counts any of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..data.shapes import COLORS, RELATIONS, SHAPES
from .spec import MAJORITY, SCENE, MetricSpec

SHAPES_TASKS = ("semantic", "compositional", "relational")
LABEL_TASKS = ("classes",)
NUM_CONCEPTS = len(COLORS) * len(SHAPES)

# Each task's primary score on each of its test sets (``probe_metric_key``); the floor is
# always answering the most frequent test label(s), the ceiling reading the true scene.
PROBE_METRICS = (
    MetricSpec("semantic_top1", "semantic probe top-1", floor=MAJORITY, ceiling=SCENE, headline=True,
               compared=True),
    MetricSpec("compositional_unseen_pairs_top5", "compositional probe top-5, unseen pairs", floor=MAJORITY,
               ceiling=SCENE, headline=True, compared=True),
    MetricSpec("compositional_seen_pairs_top5", "compositional probe top-5, seen pairs", floor=MAJORITY,
               ceiling=SCENE, headline=True, compared=True),
    MetricSpec("relational_top1", "relational probe top-1", floor=MAJORITY, ceiling=SCENE, headline=True,
               compared=True),
    MetricSpec("classes_top1", "class probe top-1", floor=MAJORITY, headline=True),
)


@dataclass
class Samples:
    """Samples over messages: ``image`` [S] message index, ``question`` [S, L] or None, ``label`` [S]."""

    image: torch.Tensor
    label: torch.Tensor
    question: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.label)

    def take(self, keep: torch.Tensor) -> "Samples":
        """The samples whose message index is in ``keep`` (a bool mask over messages)."""
        chosen = keep[self.image]
        return Samples(self.image[chosen], self.label[chosen],
                       None if self.question is None else self.question[chosen])


@dataclass
class Task:
    """One probe task: training samples, named test sets and how to read the answer."""

    name: str
    classes: list[str]
    train: Samples
    tests: dict[str, Samples]
    primary: str = "top1"  # the number the paper reports for this kind of task
    question_vocab: int = 0
    question_length: int = 0
    notes: list[str] = field(default_factory=list)


def concept_names() -> list[str]:
    return [f"{color} {shape}" for color in COLORS for shape in SHAPES]


def concepts(meta: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Colour+shape concept of every object slot ``[N, K]`` (-1 for empty slots)."""
    concept = meta["color"] * len(SHAPES) + meta["shape"]
    return torch.where(meta["valid"], concept, torch.full_like(concept, -1))


def semantic_task(train: Mapping, test: Mapping) -> Task:
    def samples(meta) -> Samples:
        area = torch.where(meta["valid"], meta["area"], torch.full_like(meta["area"], -1))
        largest = area.argmax(1)
        label = concepts(meta).gather(1, largest[:, None])[:, 0]
        return Samples(torch.arange(len(label)), label)

    return Task("semantic", concept_names(), samples(train), {"test": samples(test)})


def object_samples(meta: Mapping, keep_object: torch.Tensor) -> Samples:
    """One sample per object slot selected by ``keep_object`` [N, K]; label its concept."""
    image, slot = keep_object.nonzero(as_tuple=True)
    return Samples(image, concepts(meta)[image, slot])


def pair_table(meta: Mapping) -> torch.Tensor:
    """Unordered concept pair id of every object pair ``[N, K, K]`` (-1 on the diagonal / empty)."""
    concept = concepts(meta)
    low = torch.minimum(concept[:, :, None], concept[:, None, :])
    high = torch.maximum(concept[:, :, None], concept[:, None, :])
    pair = low * NUM_CONCEPTS + high
    slots = concept.shape[1]
    real = (concept[:, :, None] >= 0) & (concept[:, None, :] >= 0) & ~torch.eye(slots, dtype=torch.bool)
    return torch.where(real, pair, torch.full_like(pair, -1))


def held_out_pairs(fraction: float, seed: int) -> torch.Tensor:
    """Bool ``[NUM_CONCEPTS**2]`` over pair ids ``low * C + high``: the held-out unordered pairs."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out pair fraction must lie in (0, 1), got {fraction}")
    low, high = torch.triu_indices(NUM_CONCEPTS, NUM_CONCEPTS)
    ids = low * NUM_CONCEPTS + high
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
    held = torch.zeros(NUM_CONCEPTS * NUM_CONCEPTS, dtype=torch.bool)
    held[ids[order[:max(1, round(fraction * len(ids)))]]] = True
    return held


def compositional_task(train: Mapping, test: Mapping, holdout_fraction: float = 0.2, seed: int = 0) -> Task:
    held = held_out_pairs(holdout_fraction, seed)

    def in_held_pair(meta) -> torch.Tensor:
        """[N, K, K]: the pair of objects is a held-out concept pair."""
        pairs = pair_table(meta)
        return held[pairs.clamp(min=0)] & (pairs >= 0)

    train_clean = ~in_held_pair(train).flatten(1).any(1)
    test_held = in_held_pair(test)
    test_objects = test["valid"].sum(1)
    unseen = test_held.any(2)  # objects that take part in a held-out pair
    seen = test["valid"] & (~test_held.flatten(1).any(1) & (test_objects >= 2))[:, None]
    notes = [f"{int(held.sum())} of {NUM_CONCEPTS * (NUM_CONCEPTS + 1) // 2} concept pairs held out "
             f"(seed {seed}); {int((~train_clean).sum())} training images that show one were dropped"]
    return Task("compositional", concept_names(), object_samples(train, train["valid"] & train_clean[:, None]),
                {"unseen_pairs": object_samples(test, unseen), "seen_pairs": object_samples(test, seen)},
                primary="top5", notes=notes)


def relational_task(train: Mapping, test: Mapping) -> Task:
    def samples(meta) -> Samples:
        concept = concepts(meta)
        # A name picks out one object only if no other object in the image shares its concept.
        unique = (concept[:, :, None] == concept[:, None, :]).sum(2) == 1
        named = unique[:, :, None] & unique[:, None, :] & (meta["relations"] >= 0)
        image, first, second = named.nonzero(as_tuple=True)
        question = torch.stack([concept[image, first], concept[image, second]], dim=1)
        return Samples(image, meta["relations"][image, first, second], question)

    return Task("relational", list(RELATIONS), samples(train), {"test": samples(test)},
                question_vocab=NUM_CONCEPTS, question_length=2)


def classes_task(train: Mapping, test: Mapping, classes: list[str]) -> Task:
    if not bool((train["labels"] >= 0).any()):
        raise ValueError("the images have no labels: put them in class sub-folders or pass --labels FILE")
    def samples(meta) -> Samples:
        image, slot = (meta["labels"] >= 0).nonzero(as_tuple=True)
        return Samples(image, meta["labels"][image, slot])

    return Task("classes", list(classes), samples(train), {"test": samples(test)})


def build_tasks(names, train: Mapping, test: Mapping, classes: list[str] | None = None,
                holdout_fraction: float = 0.2, seed: int = 0) -> list[Task]:
    """The named tasks for the annotations at hand (see the module docstring)."""
    has_objects = "relations" in train
    tasks = []
    for name in names:
        if name in SHAPES_TASKS and not has_objects:
            raise ValueError(f"probe task {name!r} needs object annotations (the shapes data); "
                             "on image folders use the 'classes' task")
        if name == "semantic":
            tasks.append(semantic_task(train, test))
        elif name == "compositional":
            tasks.append(compositional_task(train, test, holdout_fraction, seed))
        elif name == "relational":
            tasks.append(relational_task(train, test))
        elif name == "classes":
            if "labels" not in train:
                raise ValueError("the 'classes' task needs labels: class sub-folders or --labels FILE")
            tasks.append(classes_task(train, test, classes or []))
        else:
            raise ValueError(f"unknown probe task {name!r}; use {', '.join(SHAPES_TASKS + LABEL_TASKS)}")
    return tasks


def default_tasks(meta: Mapping) -> tuple[str, ...]:
    return SHAPES_TASKS if "relations" in meta else LABEL_TASKS
