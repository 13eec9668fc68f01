"""Every decimal number the README states beside a result file is in that file.

A paragraph (or list item) of README.md that names a file or folder under ``docs/results/`` or
``benchmarks/results/`` makes its decimal numbers claims about those results: each must appear
there, to the decimals written (24.95 matches 24.9512 in a results.json). Numbers a paragraph
states without naming its result file are not checked here; the README names the file for every
measured number it gives.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT_PATH = re.compile(r"(?:docs/results|benchmarks/results)/[\w./-]*[\w/]")
# A decimal claim: not part of a version (2.13.0), a path, a date or an identifier.
DECIMAL = re.compile(r"(?<![\w.-])(\d+\.\d+)(?![\w.]*\d)")
LINKS_AND_CODE = re.compile(r"\]\([^)]*\)|`[^`]*`")


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each list item on its own; code blocks left out."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    blocks = []
    for block in re.split(r"\n\s*\n", text):
        blocks += [item for item in re.split(r"\n(?=- |\| )", block) if item.strip()]
    return blocks


def result_numbers(reference: str) -> list[str]:
    path = ROOT / reference
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".md", ".json", ".jsonl"))
    return [number for f in files for number in re.findall(r"-?\d+\.\d+", f.read_text())]


def matches(claim: str, found: list[str]) -> bool:
    decimals = len(claim.split(".")[1])
    target = float(claim)
    return any(abs(round(float(value), decimals) - target) < 1e-9 or value == claim for value in found)


def claims(text: str) -> list[tuple[str, list[str], list[str]]]:
    """(paragraph start, result files, decimal numbers) of each paragraph that names result files."""
    found = []
    for block in paragraphs(text):
        references = sorted(set(RESULT_PATH.findall(block)))
        if references:
            prose = LINKS_AND_CODE.sub(" ", block)
            found.append((block[:60], references, DECIMAL.findall(prose)))
    return found


def test_the_check_sees_a_wrong_number(tmp_path):
    text = "The model scores 24.95 dB and 99.99 dB (`docs/results/bundled-quality-2026-12-06/`).\n"
    ((start, references, numbers),) = claims(text)
    found = [n for r in references for n in result_numbers(r)]
    assert matches("24.95", found) and not matches("99.99", found)


def test_every_referenced_result_file_exists():
    missing = [r for _, references, _ in claims((ROOT / "README.md").read_text()) for r in references
               if not (ROOT / r).exists()]
    assert not missing, f"README.md names result files that do not exist: {missing}"


@pytest.mark.parametrize("start, references, numbers", claims((ROOT / "README.md").read_text()),
                         ids=lambda value: value[:30] if isinstance(value, str) else None)
def test_readme_numbers_are_in_their_result_files(start, references, numbers):
    found = [n for r in references if (ROOT / r).exists() for n in result_numbers(r)]
    wrong = [n for n in numbers if not matches(n, found)]
    assert not wrong, f"README paragraph {start!r}: {wrong} not in {references}"
