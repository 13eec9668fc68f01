"""The Python example of docs/pictures.md runs (with a tiny model and a bundled sample)."""

import re
from pathlib import Path

from comit.data import sample_paths

DOC = Path(__file__).resolve().parent.parent / "docs" / "pictures.md"


def test_pictures_doc_python_example_runs(tmp_path, tiny_model_dir, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    code = blocks[0].replace('"bundled"', repr(str(tiny_model_dir)))
    code = code.replace('load_images(["photo.png"]', f'load_images([{str(sample_paths()[0])!r}]')
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {})
    assert (tmp_path / "path.png").is_file()
    assert (tmp_path / "pictures" / "index.html").is_file() and (tmp_path / "pictures" / "photo").is_dir()
