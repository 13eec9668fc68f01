"""Hub conventions, offline: model cards, from_pretrained's hub arguments, push_to_hub, comit push."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import comit
from comit import COMiT
from comit.cli import app
from comit.model import checkpoints, hub
from comit.model.model_card import ARXIV_ID

runner = CliRunner()


def card_header(directory: Path) -> dict:
    text = (directory / "README.md").read_text()
    return yaml.safe_load(text.split("---\n")[1])


class FakeApi:
    """Stands in for huggingface_hub.HfApi: records what would be uploaded, and the files in it."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        FakeApi.calls.append(("create_repo", repo_id, private, self.token))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, allow_patterns=None, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()
                 if allow_patterns is None or p.name in allow_patterns}
        FakeApi.calls.append(("upload_folder", repo_id, files))
        return f"https://huggingface.co/{repo_id}/commit/0"


@pytest.fixture
def fake_api(monkeypatch):
    FakeApi.calls = []
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # the fake hub is "online"
    monkeypatch.setattr(hub, "HfApi", FakeApi)
    monkeypatch.setattr("huggingface_hub.hub_mixin.HfApi", FakeApi)
    return FakeApi


def test_save_pretrained_writes_a_model_card(tmp_path, tiny_model):
    out = tiny_model.save_pretrained(tmp_path / "m", model_card_kwargs={
        "metrics": {"psnr": 21.5}, "provenance": {"command": "comit train tiny", "steps": 100, "machine": "2 cores"}})
    header = card_header(out)
    assert header["library_name"] == "comit" and header["license"] == "apache-2.0"
    assert f"arxiv:{ARXIV_ID}" in header["tags"]
    body = (out / "README.md").read_text()
    for expected in ("| psnr | 21.5 |", "| command | comit train tiny |", "| optimiser steps | 100 |",
                     f"{tiny_model.config.num_msg_tokens} tokens", f"arxiv.org/abs/{ARXIV_ID}"):
        assert expected in body
    assert COMiT.from_pretrained(out).config == tiny_model.config


def test_a_card_without_provenance_says_so_and_an_edited_card_is_kept(tmp_path, tiny_model):
    out = tiny_model.save_pretrained(tmp_path / "m")
    assert "Not recorded" in (out / "README.md").read_text() and "No metrics recorded" in (out / "README.md").read_text()
    (out / "README.md").write_text("my own card\n")
    tiny_model.save_pretrained(out, model_card_kwargs={"metrics": {"psnr": 1.0}})
    assert (out / "README.md").read_text() == "my own card\n"


def test_the_card_licence_can_be_set_for_models_made_from_released_weights(tmp_path, tiny_model):
    out = tiny_model.save_pretrained(tmp_path / "m", model_card_kwargs={"license": "cc-by-nc-4.0"})
    assert card_header(out)["license"] == "cc-by-nc-4.0"


def test_from_pretrained_hands_the_hub_arguments_to_huggingface_hub(monkeypatch, tiny_model_dir):
    seen = {}

    def snapshot_download(repo_id, **kwargs):
        seen.update(repo_id=repo_id, **kwargs)
        return str(tiny_model_dir)

    monkeypatch.setattr(checkpoints, "snapshot_download", snapshot_download)
    model = COMiT.from_pretrained("owner/name", revision="v1", cache_dir="/tmp/cache", token="hf_x",
                                  local_files_only=True, force_download=True)
    assert seen == {"repo_id": "owner/name", "revision": "v1", "cache_dir": "/tmp/cache", "token": "hf_x",
                    "local_files_only": True, "force_download": True,
                    "allow_patterns": ["config.json", "model.safetensors"]}
    assert isinstance(model, COMiT)


def test_push_to_hub_uploads_weights_config_and_card(fake_api, tiny_model, tiny_images):
    url = tiny_model.push_to_hub("me/tiny", token="hf_x", model_card_kwargs={"metrics": {"psnr": 3.0}})
    assert url.endswith("/commit/0")
    (_, repo, private, token), (_, _, files) = fake_api.calls
    assert (repo, token) == ("me/tiny", "hf_x")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert json.loads(files["config.json"])["format"] == "comit"
    assert b"| psnr | 3 |" in files["README.md"]


def test_comit_push_uploads_a_folder_and_writes_its_card_from_provenance(fake_api, tmp_path, tiny_model):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    (folder / "README.md").unlink()
    (folder / "provenance.json").write_text(json.dumps({"command": "comit train tiny", "steps": 7}))
    result = runner.invoke(app, ["push", str(folder), "me/tiny", "--private"])
    assert result.exit_code == 0, result.output
    assert "pushed" in result.output and "me/tiny" in result.output
    (_, _, private, _), (_, _, files) = fake_api.calls
    assert private is True
    assert set(files) == {"config.json", "model.safetensors", "README.md", "provenance.json"}
    assert b"| optimiser steps | 7 |" in files["README.md"]


def test_comit_push_refuses_a_folder_that_is_not_a_model(fake_api, tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["push", str(tmp_path / "empty"), "me/tiny"])
    assert result.exit_code == 1 and "config.json" in result.output
    assert fake_api.calls == []


def test_cli_revision_reaches_the_hub(monkeypatch, tiny_model_dir):
    seen = {}

    def snapshot_download(repo_id, **kwargs):
        seen.update(kwargs)
        return str(tiny_model_dir)

    monkeypatch.setattr(checkpoints, "snapshot_download", snapshot_download)
    result = runner.invoke(app, ["info", "--model", "owner/name", "--revision", "abc123"])
    assert result.exit_code == 0, result.output
    assert seen["revision"] == "abc123"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"comit {comit.__version__}"


def test_train_push_to_hub_uploads_the_final_model_with_its_provenance(fake_api, tmp_path):
    from comit.train.launch import run_training

    run_training(["tiny", "max_steps=2", "batch_size=2", "eval_every=0", "checkpoint_every=1000"], tmp_path / "run",
                 resume=False, push_to_hub="me/trained")
    (_, repo, _, _), (_, _, files) = fake_api.calls
    assert repo == "me/trained"
    card = files["README.md"].decode()
    assert "| optimiser steps | 2 |" in card and "| data | shapes" in card
    assert torch.is_tensor(COMiT.from_pretrained(tmp_path / "run" / "model").predictor.pos_embed)


def _hub_cache(tmp_path, model_dir, repo_id="owner/name", commit="a" * 40):
    """A local huggingface_hub cache holding one model at ``main``, laid out as the hub writes it."""
    repo = tmp_path / "cache" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        blob = repo / "blobs" / f"{name}-blob"
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes((model_dir / name).read_bytes())
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../..") / "blobs" / blob.name)
    return tmp_path / "cache"


def test_a_missing_revision_of_a_cached_model_is_named(tmp_path, tiny_model_dir, monkeypatch):
    from comit.model.checkpoints import CheckpointError

    cache = _hub_cache(tmp_path, tiny_model_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert COMiT.from_pretrained("owner/name", cache_dir=cache).config.num_msg_tokens > 0  # main is there
    with pytest.raises(CheckpointError, match=r"is in the local cache, but not its revision 'v2' \(cached: main\)"):
        COMiT.from_pretrained("owner/name", revision="v2", cache_dir=cache)
    with pytest.raises(CheckpointError, match="'other/model' is not in the local cache"):
        COMiT.from_pretrained("other/model", revision="v2", cache_dir=cache)


def test_offline_push_leaves_the_folder_as_it_was(tmp_path, tiny_model):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE, "the tests run offline"
    folder = tiny_model.save_pretrained(tmp_path / "m")
    (folder / "README.md").unlink()
    before = sorted(p.name for p in folder.iterdir())
    result = CliRunner().invoke(app, ["push", str(folder), "me/model"])
    assert result.exit_code == 1 and "HF_HUB_OFFLINE is set" in result.output and result.output.count("\n") == 1
    assert sorted(p.name for p in folder.iterdir()) == before, "no README.md written"


def test_train_push_to_hub_offline_is_refused_before_training(tmp_path):
    result = CliRunner().invoke(app, ["train", "tiny", "--out", str(tmp_path / "run"), "--push-to-hub", "me/model",
                                      "max_steps=1"])
    assert result.exit_code == 1 and "HF_HUB_OFFLINE is set" in result.output
    assert not (tmp_path / "run").exists()
