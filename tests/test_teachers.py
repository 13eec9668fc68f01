"""Teachers: the bundled shapes CNN, any transformers backbone (offline, random local weights)."""

import pytest
import torch

from comit.teachers import TeacherError, build_teacher, resample_patches


def test_bundled_shapes_teacher():
    teacher = build_teacher("shapes")
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    features = teacher(images)
    assert features.patches.shape == (2, 64, teacher.feature_dim) and features.global_.shape == (2, teacher.feature_dim)
    assert features.grid == 8
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training, "a teacher never leaves eval mode"
    bigger = teacher(torch.nn.functional.interpolate(images, size=128, mode="nearest"))
    assert bigger.patches.shape == features.patches.shape, "other sizes are resized to the trained one"


def test_bundled_teacher_knows_shapes_and_colours():
    """The shipped weights are the trained ones: on held-out images the dense heads name the shape
    and colour of most object cells (chance is 1/6 and 1/7)."""
    from comit.data import build_dataset
    from comit.teachers.shapes_targets import TeacherAccuracy, cell_targets, pair_targets

    teacher = build_teacher("shapes")
    data = build_dataset("shapes", 64, split="val")
    items = [data[i] for i in range(64)]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    net = teacher.net
    classes = {"shape": net.config.num_shapes, "color": net.config.num_colors, "size": net.config.num_sizes}
    accuracy = TeacherAccuracy()
    with torch.no_grad():
        accuracy.update(net(batch["image"]), cell_targets(batch, net.config.grid, classes),
                        pair_targets(batch, net.config.num_colors, net.config.num_pairs))
    result = accuracy.result()
    assert result["object_cell_shape"] > 0.7 and result["object_cell_color"] > 0.8, result


def test_unknown_teacher_kind_and_missing_directory(tmp_path):
    with pytest.raises(TeacherError, match="unknown teacher kind 'clip'"):
        build_teacher("clip")
    with pytest.raises(TeacherError, match="no shapes-teacher directory"):
        build_teacher("shapes", str(tmp_path / "nowhere"))
    assert build_teacher("none") is None


@pytest.fixture(scope="module")
def local_dinov2(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    path = tmp_path_factory.mktemp("dinov2")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=56)).save_pretrained(path)
    return path


def test_hf_teacher_from_a_local_directory(local_dinov2):
    teacher = build_teacher("hf", str(local_dinov2), image_size=56)
    features = teacher(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert features.patches.shape == (3, 16, 32) and features.global_.shape == (3, 32)
    direct = teacher.model(pixel_values=teacher.normalise(torch.zeros(1, 3, 64, 64))).last_hidden_state
    assert torch.allclose(teacher(torch.zeros(1, 3, 64, 64)).global_, direct[:, 0], atol=1e-6), "CLS is the global"


def test_hf_teacher_offline_hub_id_is_one_line():
    with pytest.raises(TeacherError, match="not in the local cache"):
        build_teacher("hf", "nobody/not-a-cached-model")


def test_hf_teacher_rejects_size_off_the_patch_grid(local_dinov2):
    with pytest.raises(TeacherError, match="not a multiple of the patch size 14"):
        build_teacher("hf", str(local_dinov2), image_size=60)


def test_resample_patches():
    patches = torch.randn(2, 16, 5)
    assert resample_patches(patches, 4) is patches
    constant = torch.ones(2, 64, 5) * 3
    assert torch.allclose(resample_patches(constant, 4), torch.full((2, 16, 5), 3.0))
    assert resample_patches(patches, 8).shape == (2, 64, 5)
    with pytest.raises(TeacherError, match="do not form a square grid"):
        resample_patches(torch.randn(1, 15, 2), 4)
