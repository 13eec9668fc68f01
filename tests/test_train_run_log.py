"""The run's boards (TensorBoard, W&B), played by stand-ins: scalars, sample grids, held-out curve, resume."""

import sys
import types
from pathlib import Path

import pytest

from comit.train.config import ConfigError, load_config
from comit.train.loop import train
from comit.train.run_log import logged_train_seconds

RUN = ["max_steps=4", "batch_size=2", "log_every=1", "sample_every=2", "sample_images=2", "eval_every=2",
       "eval_images=2", "checkpoint_every=2"]


class Board:
    """Records what a SummaryWriter or a W&B run is given."""

    def __init__(self):
        self.scalars, self.images, self.closed = {}, [], False

    # TensorBoard
    def add_scalar(self, key, value, step):
        self.scalars.setdefault(key, []).append((step, value))

    def add_image(self, tag, image, step):
        self.images.append((tag, tuple(image.shape), float(image.min()), float(image.max()), step))

    def close(self):
        self.closed = True

    # W&B
    def log(self, values, step):
        for key, value in values.items():
            if isinstance(value, FakeImage):
                self.images.append((key, value.shape, float(value.data.min()), float(value.data.max()), step))
            else:
                self.add_scalar(key, value, step)

    def finish(self):
        self.closed = True


class FakeImage:
    def __init__(self, data):
        self.data, self.shape = data, tuple(data.shape)


@pytest.fixture
def boards(monkeypatch):
    made = {"tensorboard": [], "wandb": [], "wandb_init": []}

    def writer(log_dir, purge_step=None):
        made["tensorboard"].append(Board())
        return made["tensorboard"][-1]

    def init(**kwargs):
        made["wandb_init"].append(kwargs)
        made["wandb"].append(Board())
        return made["wandb"][-1]

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=writer))
    ids = iter(["run-a", "run-b"])
    fake_wandb = types.SimpleNamespace(init=init, Image=FakeImage, util=types.SimpleNamespace(generate_id=lambda: next(ids)))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    return made


def test_boards_get_scalars_sample_grids_and_the_held_out_curve(tmp_path, boards):
    train(load_config("tiny", RUN + ["loop.tensorboard=true", "loop.wandb_project=comit-tests"]), tmp_path, progress=False)
    for board in (boards["tensorboard"][0], boards["wandb"][0]):
        assert [step for step, _ in board.scalars["train/loss"]] == [1, 2, 3, 4]
        assert [step for step, _ in board.scalars["val/psnr"]] == [2, 4]
        assert [(tag, step) for tag, *_, step in board.images] == [("samples", 2), ("samples", 4)]
        assert all(0 <= low <= high <= 1 for _, _, low, high, _ in board.images)
        assert board.closed
    assert boards["tensorboard"][0].images[0][1] == (3, 2 * 64, 2 * 64)  # images over reconstructions, 2 wide
    assert boards["wandb"][0].images[0][1] == (2 * 64, 2 * 64, 3)
    assert boards["wandb_init"][0]["project"] == "comit-tests" and boards["wandb_init"][0]["id"] == "run-a"


def test_a_resumed_run_continues_the_same_wandb_run(tmp_path, boards):
    train(load_config("tiny", RUN + ["max_steps=2", "loop.wandb_project=p"]), tmp_path, progress=False)
    train(load_config(Path(tmp_path) / "config.yaml", ["max_steps=4"]), tmp_path, resume=True, progress=False)
    assert [kwargs["id"] for kwargs in boards["wandb_init"]] == ["run-a", "run-a"]
    assert all(kwargs["resume"] == "allow" for kwargs in boards["wandb_init"])


def test_a_board_that_is_not_installed_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'comit\[wandb\]'"):
        train(load_config("tiny", RUN + ["loop.wandb_project=p"]), tmp_path, progress=False)


def test_training_time_is_read_from_the_log_and_summed_for_logs_without_it(tmp_path):
    log = tmp_path / "metrics.jsonl"
    assert logged_train_seconds(log, 32) is None
    # Written before logs carried train_s: 20 steps of 32 images at 8 img/s, then 40 at 16 img/s.
    log.write_text('{"step": 20, "images_per_s": 8.0}\n{"step": 60, "images_per_s": 16.0}\n')
    assert logged_train_seconds(log, 32) == pytest.approx(20 * 32 / 8 + 40 * 32 / 16)
    log.write_text('{"step": 20, "images_per_s": 8.0, "train_s": 81.5}\n{"step": 40, "images_per_s": 8.0, "train_s": 170.0}\n')
    assert logged_train_seconds(log, 32) == 170.0
    # Resumed by a process whose checkpoint predates train_s: it counts from 0 at the resume.
    log.write_text('{"step": 20, "images_per_s": 8.0}\n{"step": 40, "images_per_s": 8.0, "train_s": 30.0}\n'
                   '{"step": 60, "images_per_s": 8.0, "train_s": 110.0}\n')
    assert logged_train_seconds(log, 32) == pytest.approx(20 * 32 / 8 + 110.0)
