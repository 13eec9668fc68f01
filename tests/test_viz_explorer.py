"""What the web app computes (explorer.py), driven without a server: inputs, limits, token clicks."""

import pytest
from PIL import Image

from comit.data import sample_paths
from comit.viz.explorer import Explorer, UserError
from comit.viz.figures import TokenGridLayout

SETTINGS = dict(model_name="tiny", order="adaptive", num_crops=3, global_crop=False, steps=2, cfg=7.5, seed=0)


@pytest.fixture
def explorer(tiny_model):
    loads = []

    def loader(name):
        loads.append(name)
        return tiny_model

    explorer = Explorer(["tiny", "tiny"], max_upload_bytes=20_000, loader=loader)
    explorer.loads = loads
    return explorer


def test_a_sample_run_draws_every_picture(explorer):
    result = explorer.run(None, sample_paths()[1].stem, **SETTINGS)
    assert result.trace.crop_indices[0] == 4 and len(result.trace.crop_indices) == 3
    for picture in (result.crop_path, result.reconstruction, result.attention):
        assert picture.size == (256, 256)
    assert result.token_ids.size == TokenGridLayout.for_tokens(16).size
    assert 0 <= result.token < 16 and "3 crops" in result.note
    assert explorer.model_names == ["tiny"]


def test_models_load_once(explorer):
    explorer.run(None, sample_paths()[0].stem, **SETTINGS)
    explorer.run(None, sample_paths()[0].stem, **SETTINGS)
    assert explorer.loads == ["tiny"]


def test_an_upload_wins_over_the_sample(explorer, tmp_path):
    upload = tmp_path / "mine.jpg"
    Image.new("RGB", (100, 80), (250, 10, 10)).save(upload)
    result = explorer.run(str(upload), sample_paths()[0].stem, **SETTINGS)
    assert result.trace.image[0].mean() > 0.9 and result.trace.image[1].mean() < -0.8  # red everywhere


def test_uploads_over_the_limit_are_refused(explorer, tmp_path):
    upload = tmp_path / "big.png"
    upload.write_bytes(b"\x89PNG" + b"\0" * 30_000)
    with pytest.raises(UserError, match="big.png is 0.0286 MB; the limit is 0.0191 MB"):
        explorer.run(str(upload), None, **SETTINGS)


def test_non_images_are_refused_with_a_clear_message(explorer, tmp_path):
    upload = tmp_path / "notes.png"
    upload.write_text("shopping list")
    with pytest.raises(UserError, match="not a recognised image format.*Upload a PNG, JPEG") as raised:
        explorer.run(str(upload), None, **SETTINGS)
    assert str(tmp_path) not in str(raised.value) and "notes.png" in str(raised.value)


def test_nothing_chosen(explorer):
    with pytest.raises(UserError, match="upload an image or pick"):
        explorer.run(None, None, **SETTINGS)


def test_unknown_model_and_order(explorer):
    sample = sample_paths()[0].stem
    with pytest.raises(UserError, match="unknown model 'other'"):
        explorer.run(None, sample, **{**SETTINGS, "model_name": "other"})
    with pytest.raises(UserError, match="unknown crop order"):
        explorer.run(None, sample, **{**SETTINGS, "order": "spiral"})


def test_too_many_crops_observe_all_there_are(explorer):
    result = explorer.run(None, sample_paths()[0].stem, **{**SETTINGS, "order": "raster_scan", "num_crops": 10})
    assert result.trace.crop_indices == list(range(9)) and "observed all 9" in result.note


def test_bad_steps_are_a_user_error(explorer):
    with pytest.raises(UserError, match="steps"):
        explorer.run(None, sample_paths()[0].stem, **{**SETTINGS, "steps": 0})


def test_a_click_on_the_token_grid_picks_that_token(explorer):
    trace = explorer.run(None, sample_paths()[0].stem, **SETTINGS).trace
    layout = TokenGridLayout.for_tokens(trace.num_tokens)
    left, top, right, bottom = layout.cell(6)
    assert explorer.token_at(trace, (left + right) / 2, (top + bottom) / 2) == 6
    assert explorer.token_at(trace, 0, 0) is None
    assert explorer.attention(trace, 6).size == (256, 256)
    assert explorer.token_ids(trace, 6).size == layout.size
    with pytest.raises(UserError, match=r"\[0, 15\]"):
        explorer.attention(trace, 16)
    with pytest.raises(UserError, match="run a reconstruction first"):
        explorer.attention(None, 0)


def test_the_explorer_needs_models_and_a_positive_limit():
    with pytest.raises(ValueError, match="at least one model"):
        Explorer([], 10)
    with pytest.raises(ValueError, match="> 0"):
        Explorer(["bundled"], 0)
