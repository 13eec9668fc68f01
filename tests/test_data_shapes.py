"""The procedural shapes dataset: determinism, annotation invariants, spec parsing, samples."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from comit.data import (COLOR_RGB, COLORS, RELATIONS, SHAPES, SIZES, VAL_SEED_OFFSET,
                        ShapesConfig, ShapesDataset, ShapesLayoutError, build_dataset, describe,
                        load_image, sample_annotations, sample_masks, sample_paths)
from comit.data import shapes as shapes_module

LEFT, RIGHT, ABOVE, BELOW = (RELATIONS.index(name)
                             for name in ("left of", "right of", "above", "below"))
OPPOSITE = {LEFT: RIGHT, RIGHT: LEFT, ABOVE: BELOW, BELOW: ABOVE}
EXPECTED_FIELDS = {"image", "masks", "valid", "shape", "color", "size", "center", "relations",
                   "num_objects", "label", "index"}


def _assert_items_equal(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def _items(dataset: ShapesDataset, count: int) -> list[dict]:
    return [dataset[i] for i in range(count)]


@pytest.fixture(scope="module")
def dataset() -> ShapesDataset:
    return ShapesDataset(num_images=100)


@pytest.fixture(scope="module")
def items(dataset) -> list[dict]:
    return _items(dataset, 60)


def test_vocabulary():
    assert len(SHAPES) == 5 and len(set(SHAPES)) == 5
    assert len(COLORS) == len(COLOR_RGB) >= 6
    assert SIZES == ("small", "large")
    assert RELATIONS == ("left of", "right of", "above", "below")
    rgb = np.array(COLOR_RGB, dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    assert distances[~np.eye(len(rgb), dtype=bool)].min() > 100  # clearly distinct colours


def test_same_item_twice_is_identical(dataset):
    _assert_items_equal(dataset[7], dataset[7])
    _assert_items_equal(dataset[7], ShapesDataset(num_images=100)[7])


def test_items_do_not_depend_on_access_order(dataset):
    forward = _items(dataset, 6)
    backward = [dataset[i] for i in reversed(range(6))][::-1]
    for first, second in zip(forward, backward):
        _assert_items_equal(first, second)


def test_items_do_not_depend_on_dataloader_workers(dataset):
    loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=False)
    batch = next(iter(loader))
    for i in range(4):
        assert torch.equal(batch["image"][i], dataset[i]["image"])
        assert torch.equal(batch["masks"][i], dataset[i]["masks"])


def test_different_seeds_and_indices_differ(dataset):
    other = ShapesDataset(num_images=100, seed=1)
    assert not torch.equal(dataset[0]["image"], other[0]["image"])
    assert not torch.equal(dataset[0]["image"], dataset[1]["image"])


def test_fields_shapes_and_dtypes(items):
    item = items[0]
    assert set(item) == EXPECTED_FIELDS
    expected = {
        "image": ((3, 64, 64), torch.float32), "masks": ((3, 64, 64), torch.bool),
        "valid": ((3,), torch.bool), "shape": ((3,), torch.int64),
        "color": ((3,), torch.int64), "size": ((3,), torch.int64),
        "center": ((3, 2), torch.float32), "relations": ((3, 3), torch.int64),
        "num_objects": ((), torch.int64), "label": ((), torch.int64),
        "index": ((), torch.int64),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(item[key].shape) == shape and item[key].dtype == dtype, key


def test_attribute_ranges_and_padding(items):
    counts = set()
    for item in items:
        count = int(item["num_objects"])
        counts.add(count)
        assert item["valid"].tolist() == [k < count for k in range(3)]
        assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
        for key, vocabulary in (("shape", SHAPES), ("color", COLORS), ("size", SIZES)):
            values = item[key]
            assert values[:count].min() >= 0 and values[:count].max() < len(vocabulary), key
            assert torch.all(values[count:] == -1), key
        assert item["center"][:count].abs().max() < 1.0
        assert 0 <= item["label"] < len(SHAPES)
    assert counts == {1, 2, 3}


def test_every_attribute_value_occurs(items):
    for key, vocabulary in (("shape", SHAPES), ("color", COLORS), ("size", SIZES)):
        seen = {int(value) for item in items for value in item[key] if value >= 0}
        assert seen == set(range(len(vocabulary))), key


def test_masks_are_non_empty_disjoint_and_padded(items):
    for item in items:
        count = int(item["num_objects"])
        areas = item["masks"].sum(dim=(1, 2))
        assert torch.all(areas[:count] >= 3) and torch.all(areas[count:] == 0)
        assert item["masks"].sum(dim=0).max() <= 1


def test_masks_lie_around_their_centres(items):
    size = 64
    largest_half_extent = max(high for _, high in shapes_module.SIZE_RANGES) * size / 2
    for item in items:
        for k in range(int(item["num_objects"])):
            ys, xs = torch.nonzero(item["masks"][k], as_tuple=True)
            cx, cy = ((item["center"][k] + 1.0) * size / 2).tolist()
            assert (xs.float() + 0.5 - cx).abs().max() <= largest_half_extent + 1
            assert (ys.float() + 0.5 - cy).abs().max() <= largest_half_extent + 1


def test_small_objects_are_smaller_than_large_ones(items):
    spans = {0: [], 1: []}
    for item in items:
        for k in range(int(item["num_objects"])):
            ys, xs = torch.nonzero(item["masks"][k], as_tuple=True)
            span = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
            spans[int(item["size"][k])].append(int(span))
    assert max(spans[0]) <= 0.22 * 64 + 1
    assert np.mean(spans[1]) > 1.5 * np.mean(spans[0])


def test_object_colours_match_their_masks():
    dataset = ShapesDataset(background="plain", num_images=20)
    for item in _items(dataset, 20):
        pixels = (item["image"] + 1.0) / 2.0 * 255.0
        for k in range(int(item["num_objects"])):
            mean = pixels[:, item["masks"][k]].mean(dim=1)
            expected = torch.tensor(COLOR_RGB[int(item["color"][k])], dtype=torch.float32)
            assert (mean - expected).abs().max() < 40, describe(item)[k]


@pytest.mark.parametrize("max_overlap", [0.3, 0.0])
def test_no_object_is_hidden_more_than_max_overlap(max_overlap):
    dataset = ShapesDataset(num_images=40, max_overlap=max_overlap)
    for index in range(40):
        _, objects = dataset._generate(index)  # the full (unoccluded) masks live here
        visible = dataset[index]["masks"]
        for k, obj in enumerate(objects):
            full = torch.from_numpy(obj.full_mask)
            assert torch.all(full | ~visible[k])  # visible part is a subset of the object
            hidden = int(full.sum() - visible[k].sum())
            assert hidden <= max_overlap * int(full.sum()), (index, k)


def test_relations_are_consistent(items):
    for item in items:
        count = int(item["num_objects"])
        relations = item["relations"]
        assert torch.all(relations.diagonal() == -1)
        assert torch.all(relations[count:] == -1) and torch.all(relations[:, count:] == -1)
        for i in range(count):
            for j in range(count):
                if i == j:
                    continue
                relation = int(relations[i, j])
                assert int(relations[j, i]) == OPPOSITE[relation]
                dx, dy = (item["center"][i] - item["center"][j]).tolist()
                expected = (LEFT if dx < 0 else RIGHT) if abs(dx) >= abs(dy) else (
                    ABOVE if dy < 0 else BELOW)
                assert relation == expected


def test_label_is_the_shape_of_the_largest_visible_object(items):
    for item in items:
        count = int(item["num_objects"])
        largest = int(item["masks"][:count].sum(dim=(1, 2)).argmax())
        assert item["label"] == item["shape"][largest]


def test_describe_lists_objects(items):
    item = items[0]
    lines = describe(item)
    assert len(lines) == int(item["num_objects"])
    size, color, shape = lines[0].split(" at ")[0].split(" ")
    assert size in SIZES and color in COLORS and shape in SHAPES
    assert lines[0].endswith(")") and "(" in lines[0]
    with pytest.raises(ValueError, match="batch"):
        describe({key: value[None] for key, value in item.items()})


@pytest.mark.parametrize("options", [
    {"image_size": 32, "max_objects": 5, "min_objects": 4},
    {"image_size": 16, "max_objects": 2},
    {"image_size": 96, "background": "plain", "max_overlap": 0.0},
])
def test_other_configurations(options):
    dataset = ShapesDataset(num_images=10, **options)
    size, slots = options["image_size"], options.get("max_objects", 3)
    for item in _items(dataset, 10):
        assert item["image"].shape == (3, size, size)
        assert item["masks"].shape == (slots, size, size)
        count = int(item["num_objects"])
        assert options.get("min_objects", 1) <= count <= slots
        assert torch.all(item["masks"][:count].sum(dim=(1, 2)) > 0)


def test_background_is_not_flat():
    item = ShapesDataset(num_images=1)[0]
    plain = ShapesDataset(num_images=1, background="plain")[0]["image"]
    assert not item["masks"][:, :8, :8].any()  # the corner checked below is pure background
    corner = item["image"][:, :6, :6]
    assert corner.std() > 0.003 and corner.max() < -0.4  # dark but textured
    assert plain[:, :2, :2].std() == 0


@pytest.mark.parametrize("options, message", [
    ({"min_objects": 3, "max_objects": 2}, "min_objects"),
    ({"image_size": 8}, "image_size"),
    ({"background": "checker"}, "background"),
    ({"max_overlap": 1.0}, "max_overlap"),
    ({"num_images": 0}, "num_images"),
    ({"seed": -1}, "seed"),
])
def test_invalid_configuration_is_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        ShapesConfig(**options)


def test_unknown_option_is_rejected():
    with pytest.raises(ValueError, match="unknown ShapesConfig option.*colour"):
        ShapesDataset(colour="red")


def test_config_and_overrides_combine():
    dataset = ShapesDataset(ShapesConfig(max_objects=2), seed=5)
    assert dataset.config.max_objects == 2 and dataset.config.seed == 5


def test_impossible_layout_raises(monkeypatch):
    monkeypatch.setattr(shapes_module, "_POSITION_ATTEMPTS", 5)
    monkeypatch.setattr(shapes_module, "_LAYOUT_ATTEMPTS", 2)
    dataset = ShapesDataset(image_size=16, min_objects=12, max_objects=12, max_overlap=0.0)
    with pytest.raises(ShapesLayoutError, match="max_overlap"):
        dataset[0]


def test_index_out_of_range(dataset):
    assert torch.equal(dataset[-1]["index"], torch.tensor(99))
    with pytest.raises(IndexError):
        dataset[100]


def test_build_dataset_shapes_spec():
    dataset = build_dataset("shapes:max_objects=2, seed=3,background=plain", 32)
    assert isinstance(dataset, ShapesDataset)
    assert dataset.config == ShapesConfig(image_size=32, max_objects=2, seed=3, background="plain")
    assert build_dataset("shapes", 48, num_images=5).config.num_images == 5
    assert build_dataset("shapes", 48, flip=False).config.image_size == 48


def test_build_dataset_val_split_uses_offset_seed():
    train = build_dataset("shapes:seed=2", 32)
    val = build_dataset("shapes:seed=2", 32, split="val")
    assert val.config.seed == 2 + VAL_SEED_OFFSET and train.config.seed == 2
    assert not torch.equal(train[0]["image"], val[0]["image"])


@pytest.mark.parametrize("spec, message", [
    ("shapes:max_objects", "key=value"),
    ("shapes:colour=red", "key=value"),
    ("shapes:max_objects=two", "must be of type int"),
    ("shapes:image_size=32", "conflicting image sizes"),
])
def test_build_dataset_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        build_dataset(spec, 64)


def test_build_dataset_rejects_flip_for_shapes():
    with pytest.raises(ValueError, match="relations"):
        build_dataset("shapes", 64, flip=True)


def test_bundled_samples_match_the_generator():
    paths = sample_paths()
    assert len(paths) == 6
    dataset = build_dataset("shapes:min_objects=2,max_objects=3", 64, split="val")
    for index, path in enumerate(paths):
        image = load_image(path, 64)
        masks = sample_masks(path)
        objects = sample_annotations(path)
        assert 2 <= len(objects) == masks.shape[0] <= 3
        item = dataset[index]
        # A mismatch means the generator changed: re-run scripts/make_samples.py.
        assert (image - item["image"]).abs().max() <= 1.01 / 127.5, path.name
        assert torch.equal(masks, item["masks"][: len(objects)]), path.name
        assert [entry["description"] for entry in objects] == describe(item)


def test_generation_speed_is_reported(dataset):
    # Speed is printed, not asserted: timings on shared CI machines are too noisy to gate on.
    count = 200
    start = time.perf_counter()
    for index in range(count):
        dataset[index % len(dataset)]
    milliseconds = (time.perf_counter() - start) / count * 1000
    print(f"shapes generation: {milliseconds:.2f} ms per 64px image")
