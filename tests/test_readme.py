"""Every ```python block of the README runs, in order, in one namespace: the docs cannot rot.

The hub is played by a local folder: ``push_to_hub`` uploads into it and ``from_pretrained`` of a
hub id reads from it, so the sharing example runs offline as written.
"""

import re
import shutil
from pathlib import Path

import torch

from comit.model import checkpoints

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


class LocalHub:
    """The parts of huggingface_hub.HfApi that push_to_hub uses, writing to ``root/owner/name``."""

    def __init__(self, root: Path):
        self.root = root

    def __call__(self, token=None):
        return self

    def create_repo(self, repo_id, private=None, exist_ok=False):
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, **kwargs):
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        return f"local://{repo_id}"

    def snapshot_download(self, repo_id, **kwargs):
        return str(self.root / repo_id)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    hub = LocalHub(tmp_path / "hub")
    monkeypatch.setattr("huggingface_hub.hub_mixin.HfApi", hub)
    monkeypatch.setattr(checkpoints, "snapshot_download", hub.snapshot_download)
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 3
    namespace: dict = {}
    torch.manual_seed(0)
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["more"].crop_order.shape[0] == 5
    assert namespace["pictures"].shape == namespace["images"].shape
    assert (tmp_path / "my-model" / "README.md").is_file() and (tmp_path / "hub" / "me" / "my-comit" / "README.md").is_file()


def names(part: str, config: str) -> bool:
    """Whether a README passage names a config (``imagenet-b/l/xl`` and `` `-l` `` spell out three)."""
    three = "imagenet-b imagenet-l imagenet-xl"
    part = re.sub(r"imagenet-b/l/xl|imagenet-b` /\s*`-l` /\s*`-xl", three, part)
    return re.search(rf"(?<![\w-]){re.escape(config)}(?![\w-])", part) is not None


def test_readme_names_every_shipped_config():
    text = README.read_text()
    shipped = sorted(p.stem for p in (README.parent / "src/comit/configs").glob("*.yaml"))
    passages = {"Shipped configs": text.split("Shipped configs:", 1)[1].split("\n\n", 1)[0],
                "Layout": text.split("src/comit/configs/", 1)[1].split("src/comit/", 1)[0]}
    for where, part in passages.items():
        missing = [config for config in shipped if not names(part, config)]
        assert not missing, f"README's {where} does not name {missing}"
