import pytest
import torch

from comit.model.crops import CropGrid, step_offsets
from comit.model.policies import fixed_order


def test_paper_geometry():
    grid = CropGrid(256, 96, 3)
    assert grid.stride == 80
    assert grid.local_box(4).top == 80 and grid.local_box(4).left == 80
    assert grid.local_box(5).top == 80 and grid.local_box(5).left == 160
    assert grid.location(grid.local_box(4)) == (0.0, 0.0)
    assert grid.location(grid.local_box(0)) == pytest.approx((-0.625, -0.625))
    assert grid.location(grid.local_box(5)) == pytest.approx((0.625, 0.0))  # x first
    assert grid.location(grid.box(0, global_crop=True)) == (0.0, 0.0)


def test_geometry_follows_the_config():
    grid = CropGrid(64, 24, 3)
    assert grid.stride == 20
    assert grid.location(grid.local_box(8)) == pytest.approx(((40 + 12) / 32 - 1, (40 + 12) / 32 - 1))
    big = CropGrid(128, 32, 4)
    assert big.num_local == 16 and big.stride == 32
    assert big.local_box(15).top == 96


def test_index_space_with_global_crop():
    grid = CropGrid(64, 24, 3)
    assert grid.num_indices(False) == 9 and grid.num_indices(True) == 10
    assert grid.box(1, global_crop=True) == grid.local_box(0)
    locations = grid.locations(torch.tensor([0, 1]), global_crop=True)
    assert torch.allclose(locations[0], torch.zeros(2))


def test_cut_takes_the_right_pixels():
    grid = CropGrid(64, 24, 3)
    images = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).view(2, 3, 64, 64)
    crops = grid.cut(images, torch.tensor([5, 0]), global_crop=False)
    assert crops.shape == (2, 3, 24, 24)
    assert torch.equal(crops[0], images[0, :, 20:44, 40:64])
    assert torch.equal(crops[1], images[1, :, 0:24, 0:24])


def _cut_image_by_image(grid, images, indices, global_crop):
    """The per-image loop CropGrid.cut replaced: the reference its single gather must equal."""
    boxes = [grid.box(index, global_crop) for index in indices.tolist()]
    return torch.stack([image[:, b.top:b.top + b.size, b.left:b.left + b.size] for image, b in zip(images, boxes)])


@pytest.mark.parametrize("global_crop", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cut_equals_the_per_image_loop(global_crop, channels_last):
    grid = CropGrid(64, 24, 3)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 64, 64, generator=generator)
    if channels_last:
        images = images.to(memory_format=torch.channels_last)
    first_local = int(global_crop)
    indices = torch.randint(first_local, grid.num_indices(global_crop), (16,), generator=generator)
    crops = grid.cut(images, indices, global_crop)
    assert torch.equal(crops, _cut_image_by_image(grid, images, indices, global_crop))
    assert crops.is_contiguous()
    if global_crop:
        whole = grid.cut(images, torch.zeros(16, dtype=torch.long), global_crop)
        assert torch.equal(whole, images)


def test_cut_refuses_crops_of_different_sizes():
    grid = CropGrid(64, 24, 3)
    with pytest.raises(ValueError, match="share a size"):
        grid.cut(torch.zeros(2, 3, 64, 64), torch.tensor([0, 1]), global_crop=True)


def test_window_errors_are_window_means():
    grid = CropGrid(64, 24, 3)
    error = torch.rand(2, 1, 64, 64)
    windows = grid.window_errors(error)
    for k in range(9):
        box = grid.local_box(k)
        expected = error[:, 0, box.top:box.top + 24, box.left:box.left + 24].mean(dim=(1, 2))
        torch.testing.assert_close(windows[:, k], expected)


def test_named_orders():
    grid = CropGrid(64, 24, 3)
    assert fixed_order(grid, "raster_scan", 2, 3, False).T.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert fixed_order(grid, "raster_scan", 1, None, True).T.tolist() == [list(range(10))]
    generator = torch.Generator().manual_seed(0)
    random = fixed_order(grid, "random", 4, None, True, generator)
    assert (random[0] == 0).all()
    for column in random.T.tolist():
        assert sorted(column) == list(range(10))
    assert len({tuple(c) for c in random.T.tolist()}) > 1  # per-image orders differ


def test_explicit_orders():
    grid = CropGrid(64, 24, 3)
    assert fixed_order(grid, [5, 6, 8], 2, None, False).T.tolist() == [[5, 6, 8], [5, 6, 8]]
    assert fixed_order(grid, [5, 6, 8], 2, 2, False).T.tolist() == [[5, 6], [5, 6]]
    assert fixed_order(grid, [[1, 2], [3, 0]], 2, None, True).T.tolist() == [[1, 2], [3, 0]]


@pytest.mark.parametrize("order,global_crop,message", [
    ([9], False, "out of range"),
    ([10], True, "out of range"),
    ([-1], False, "out of range"),
    ([1, 1], False, "twice"),
    ([], False, "empty"),
    ([[1, 2], [3]], False, "same length"),
    ([[1, 2]], False, "1 lists for 2 images"),
    ([1.5], False, "integers"),
    ("diagonal", False, "unknown crop order"),
])
def test_bad_orders_are_explained(order, global_crop, message):
    with pytest.raises(ValueError, match=message):
        fixed_order(CropGrid(64, 24, 3), order, 2, None, global_crop)


@pytest.mark.parametrize("num_crops", [0, 10, -1, 2.0, True])
def test_bad_num_crops(num_crops):
    with pytest.raises(ValueError, match="num_crops"):
        fixed_order(CropGrid(64, 24, 3), "raster_scan", 1, num_crops, False)


def test_num_crops_longer_than_an_explicit_list():
    with pytest.raises(ValueError, match=r"num_crops must be an integer in \[1, 2\]"):
        fixed_order(CropGrid(64, 24, 3), [1, 2], 1, 3, False)


def test_offsets():
    first = torch.tensor([[0.5, -0.5]])
    assert torch.equal(step_offsets(first, None), torch.zeros(1, 2))
    assert torch.equal(step_offsets(torch.tensor([[0.0, 0.5]]), first), torch.tensor([[-0.5, 1.0]]))
