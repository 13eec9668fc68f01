"""scripts/gpu_run.sh, the one prepared call for a lent GPU, dry-run on the CPU at tiny size: every
step runs and the folder holds what a GPU run sends back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every step at tiny size: about two minutes on 2 cores
ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_run_dry_runs_on_the_cpu(tmp_path):
    # As on a lent GPU, where no .venv is: the package run as a module by the machine's python.
    env = {**os.environ, "TINY": "1", "DEVICE": "cpu", "COMIT": f"{sys.executable} -m comit", "PYTHON": sys.executable,
           "BIN": str(tmp_path / "no-venv")}
    out = tmp_path / "run"
    # The budget is a GPU call's clock; here it must only not cut a step short when the CPU is shared
    # (a loaded 2-core machine took 405 s for the smoke step alone and left the structure no time).
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh"), str(out), "1800"], env=env,
                          capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines()[1:]]
    assert [row[0] for row in rows] == ["env", "smoke", "bench-fp32", "bench-bf16", "structure"]
    assert all(row[1] == "ok" for row in rows), (rows, done.stdout)
    for name in ("bench-fp32/bench.json", "bench-bf16/bench.md", "structure/results.md", "smoke.log", "env.log"):
        assert (out / name).is_file(), name
    assert "2/2 units finished" in (out / "structure.log").read_text()
    assert "| structure | ok |" in (out / "summary.md").read_text()


def test_a_step_past_the_budget_is_skipped_and_said(tmp_path):
    env = {**os.environ, "TINY": "1", "DEVICE": "cpu", "BIN": str(Path(sys.executable).parent)}
    out = tmp_path / "run"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh"), str(out), "3"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines()[1:]]
    assert rows and all(row[1] == "skipped (no time left)" for row in rows), rows
