"""Training configs: shipped ones load, overrides apply, bad values fail before any work."""

import pytest

from comit.cli import app
from comit.train.config import ConfigError, load_config, qualify_key, shipped_configs
from typer.testing import CliRunner


def test_every_shipped_config_loads():
    names = shipped_configs()
    assert {"tiny", "shapes-small", "imagenet-b", "imagenet-l", "imagenet-xl"} <= set(names)
    for name in names:
        config = load_config(name)
        assert config.model.attention == "hard"
        assert config.optim.batch_size % config.optim.grad_accum == 0


def test_paper_configs_follow_the_paper():
    sizes = {"imagenet-b": (768, 12), "imagenet-l": (1024, 24), "imagenet-xl": (1152, 28)}
    for name, (hidden, depth) in sizes.items():
        config = load_config(name)
        assert (config.model.hidden_size, config.model.depth) == (hidden, depth)
        assert config.model.image_size == 256 and config.model.crop_size == 96 and config.model.grid_size == 3
        assert config.model.autoencoder.kind == "sd-vae" and config.model.num_msg_tokens == 256
        assert config.model.fsq_levels == [8, 8, 8, 5, 5, 5]
        assert config.teacher.kind == "hf" and "dinov2" in config.teacher.name
        assert config.optim.batch_size == 512 and config.optim.lr == 3e-4 and config.optim.ema_decay == 0.999


def test_overrides_bare_and_dotted():
    config = load_config("tiny", ["max_steps=7", "batch_size=4", "optim.lr=1e-4", "seed=3", "log_every=2",
                                  "model.num_msg_tokens=8"])
    assert config.loop.max_steps == 7 and config.optim.batch_size == 4 and config.optim.lr == 1e-4
    assert config.loop.seed == 3 and config.loop.log_every == 2 and config.model.num_msg_tokens == 8
    assert qualify_key("unconditional_p") == "step.unconditional_p"


@pytest.mark.parametrize("override, message", [
    ("max_stepz=3", "unknown config key 'max_stepz'"),
    ("loop.max_stepz=3", "loop.max_stepz: Extra inputs are not permitted"),
    ("max_steps=many", "loop.max_steps: Input should be a valid integer"),
    ("max_crops=11", "step.max_crops 11 exceeds the 10 crops"),
    ("model.attention=released", "training uses attention: hard"),
    ("optim.schedule=wsd", "optim.schedule wsd needs optim.decay_steps >= 1"),
    ("noequals", "unexpected argument"),
])
def test_bad_values_fail_before_any_work(tmp_path, override, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "tiny", "max_steps=1", override, "--out", str(out)])
    assert result.exit_code == 1
    assert message in result.output, result.output
    assert result.output.strip().count("\n") == 0, "one line, no traceback"
    assert not out.exists(), "nothing is written before the config is valid"


def test_min_crops_beyond_the_local_crops_needs_the_global_crop_first():
    """min_crops 10 on a 3x3 grid: a sequence without the global crop has only 9 local crops, so it
    is refused unless global_first_p = 1."""
    with pytest.raises(ConfigError, match="step.min_crops 10 exceeds the 9 local crops") as refused:
        load_config("tiny", ["min_crops=10", "global_first_p=0.5"])
    assert "\n" not in str(refused.value), "one line"
    assert load_config("tiny", ["min_crops=10", "global_first_p=1"]).step.min_crops == 10


def test_unknown_config_name_lists_shipped():
    with pytest.raises(ConfigError, match="shipped: .*tiny"):
        load_config("no-such-config")


def test_batch_that_does_not_split_is_refused():
    config = load_config("tiny", ["batch_size=10", "grad_accum=4"])
    with pytest.raises(ConfigError, match="does not split into 1 processes x 4"):
        config.micro_batch(1)
