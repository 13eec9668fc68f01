"""Image IO: every PIL mode becomes RGB in [-1, 1], bad files fail with one clear line."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from comit.data.images import (IMAGE_EXTENSIONS, ImageLoadError, load_image, load_images,
                               save_image, to_pil)

RED = (1.0, -1.0, -1.0)
WHITE = (1.0, 1.0, 1.0)


def _pixel(tensor: torch.Tensor, y: int, x: int) -> tuple[float, ...]:
    return tuple(round(float(value), 2) for value in tensor[:, y, x])


def _assert_image_tensor(tensor: torch.Tensor, size: int) -> None:
    assert tensor.shape == (3, size, size)
    assert tensor.dtype == torch.float32
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0


def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    tensor = load_image(tmp_path / "rgb.png", 16)
    _assert_image_tensor(tensor, 16)
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1.0
    assert torch.allclose(tensor, expected, atol=1e-6)


def test_rgba_is_composited_over_white(tmp_path):
    pixels = np.zeros((8, 8, 4), dtype=np.uint8)
    pixels[:, :4] = (255, 0, 0, 255)  # opaque red on the left, fully transparent on the right
    Image.fromarray(pixels).save(tmp_path / "rgba.png")
    tensor = load_image(tmp_path / "rgba.png", 8)
    _assert_image_tensor(tensor, 8)
    assert _pixel(tensor, 4, 1) == RED
    assert _pixel(tensor, 4, 6) == WHITE


def test_greyscale_gives_equal_channels(tmp_path):
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    Image.fromarray(ramp).save(tmp_path / "grey.png")
    tensor = load_image(tmp_path / "grey.png", 16)
    _assert_image_tensor(tensor, 16)
    assert torch.equal(tensor[0], tensor[1]) and torch.equal(tensor[1], tensor[2])
    assert tensor[0, 0, 0] == -1.0


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))
    image.save(tmp_path / "palette.png", transparency=0)
    tensor = load_image(tmp_path / "palette.png", 8)
    assert _pixel(tensor, 2, 1) == RED
    assert _pixel(tensor, 2, 6) == WHITE  # index 0 is transparent -> white, not black


def test_sixteen_bit_greyscale_keeps_its_range(tmp_path):
    pixels = np.zeros((8, 8), dtype=np.uint16)
    pixels[:, 4:] = 65535
    pixels[:, 2:4] = 32896  # 128 * 257
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")  # really a high-depth file
    tensor = load_image(tmp_path / "deep.png", 8)
    _assert_image_tensor(tensor, 8)
    assert _pixel(tensor, 0, 0) == (-1.0, -1.0, -1.0)
    assert _pixel(tensor, 0, 3) == (0.0, 0.0, 0.0)
    assert _pixel(tensor, 0, 6) == WHITE


def test_non_square_jpeg_is_centre_cropped(tmp_path):
    # 96x64: green 16-pixel borders left and right, red in the middle 64x64 square. The borders
    # sit on JPEG block boundaries so compression does not bleed green into the square.
    pixels = np.zeros((64, 96, 3), dtype=np.uint8)
    pixels[:, :, 1] = 255
    pixels[:, 16:80] = (255, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "wide.jpg", quality=95, subsampling=0)
    cropped = load_image(tmp_path / "wide.jpg", 64)
    assert cropped[1].max() < -0.8  # no green survives the crop
    resized = load_image(tmp_path / "wide.jpg", 24)
    _assert_image_tensor(resized, 24)
    assert resized[0].mean() > 0.8 and resized[1].max() < -0.7


def test_tall_image_keeps_the_centre_rows(tmp_path):
    pixels = np.zeros((30, 10, 3), dtype=np.uint8)
    pixels[10:20] = 255
    Image.fromarray(pixels).save(tmp_path / "tall.png")
    assert torch.all(load_image(tmp_path / "tall.png", 10) == 1.0)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((8, 16, 3), dtype=np.uint8)
    pixels[:, :8] = (255, 0, 0)
    pixels[:, 8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the red left half goes on top
    Image.fromarray(pixels).save(tmp_path / "camera.png", exif=exif)
    tensor = load_image(tmp_path / "camera.png", 8)
    assert _pixel(tensor, 1, 4) == RED
    assert _pixel(tensor, 6, 4) == (-1.0, -1.0, 1.0)


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nowhere.png"
    with pytest.raises(ImageLoadError, match="nowhere.png.*no such file") as caught:
        load_image(missing, 8)
    assert "\n" not in str(caught.value)


def test_text_file_named_png_is_rejected(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image\n")
    with pytest.raises(ImageLoadError, match="fake.png.*not a recognised image") as caught:
        load_image(fake, 8)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("suffix, size", [(".jpg", 32), (".jpg", 8), (".png", 32)])
def test_truncated_file_is_rejected(tmp_path, suffix, size):
    # size 8 makes the JPEG decoder take its reduced-scale (draft) path, which must still notice.
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(pixels).save(whole)
    data = whole.read_bytes()
    half = tmp_path / f"half{suffix}"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=f"half{suffix}.*truncated") as caught:
        load_image(half, size)
    assert "\n" not in str(caught.value)


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path, 8)


def test_load_error_is_a_value_error():
    assert issubclass(ImageLoadError, ValueError)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_size_is_rejected(tmp_path, size):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="positive integer"):
        load_image(tmp_path / "a.png", size)


def test_load_images_stacks_a_batch(tmp_path):
    paths = []
    for k, color in enumerate([(255, 0, 0), (0, 0, 255)]):
        paths.append(tmp_path / f"{k}.png")
        Image.new("RGB", (20, 12), color).save(paths[-1])
    batch = load_images(paths, 6)
    assert batch.shape == (2, 3, 6, 6)
    assert batch[0, 0].min() == 1.0 and batch[1, 2].min() == 1.0
    with pytest.raises(ValueError, match="empty"):
        load_images([], 6)


def test_to_pil_and_save_round_trip(tmp_path):
    levels = torch.randint(0, 256, (3, 12, 12)).float()
    tensor = levels / 127.5 - 1.0
    pil = to_pil(tensor)
    assert pil.mode == "RGB" and pil.size == (12, 12)
    written = save_image(tensor, tmp_path / "deep" / "nested" / "out.png")
    assert written == tmp_path / "deep" / "nested" / "out.png"
    assert torch.allclose(load_image(written, 12), tensor, atol=1e-6)


def test_to_pil_clips_out_of_range_values():
    pil = to_pil(torch.tensor([-3.0, 0.0, 5.0]).view(3, 1, 1))
    assert pil.getpixel((0, 0)) == (0, 128, 255)


def test_to_pil_rejects_a_batch():
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        to_pil(torch.zeros(2, 3, 4, 4))


def test_save_format_follows_suffix(tmp_path):
    tensor = torch.zeros(3, 8, 8)
    for suffix, image_format in ((".jpg", "JPEG"), (".png", "PNG"), (".webp", "WEBP")):
        path = save_image(tensor, tmp_path / f"image{suffix}")
        with Image.open(path) as written:
            assert written.format == image_format
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    save_image(rgba, tmp_path / "alpha.jpg")  # JPEG cannot store alpha: flattened, not an error


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.png"
    save_image(torch.zeros(3, 4, 4), target)
    save_image(torch.ones(3, 4, 4), target)  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    assert load_image(target, 4).min() == 1.0


def test_failed_save_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    save_image(torch.zeros(3, 4, 4), target)
    before = target.read_bytes()

    def broken_save(self, fp, format=None, **params):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(torch.ones(3, 4, 4), target)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    assert target.read_bytes() == before


def test_unknown_suffix_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown suffix"):
        save_image(torch.zeros(3, 4, 4), tmp_path / "out.xyz")
    assert os.listdir(tmp_path) == []


def test_extensions_are_lowercase_with_dot():
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)
    assert ".png" in IMAGE_EXTENSIONS and ".jpg" in IMAGE_EXTENSIONS
