"""The measurement scripts behind numbers in the docs run and say what the docs quote."""

import json
import re
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_profile_train_step_groups_the_whole_step():
    out = subprocess.run([sys.executable, str(SCRIPTS / "profile_train_step.py"), "tiny", "1", "fp32"],
                         capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("tiny (fp32): "))
    shares = [float(share) for share in re.findall(r"(\d+) %", line)]
    assert "matrix products" in line and abs(sum(shares) - 100) <= len(shares)  # each rounded to 1 %


def test_photo_fit_separates_shapes_from_photographs(tmp_path):
    subprocess.run([sys.executable, str(SCRIPTS / "photo_fit.py"), str(tmp_path), "--val", "8"], capture_output=True,
                   check=True)
    results = json.loads((tmp_path / "results.json").read_text())
    threshold = results["threshold_db"]
    assert all(value >= threshold for value in results["samples"].values())
    below = [value < threshold for value in results["photographs"].values()]
    assert sum(below) >= len(below) - 1 and (tmp_path / "results.md").is_file()
    # The control: shapes val images are scored too, and the autoencoder alone tells them from photographs.
    assert results["val"]["images"] == 8 and "False alarms on shapes" in (tmp_path / "results.md").read_text()
    trips = results["round_trip"]
    assert min(trips["samples"].values()) > max(value for name, value in trips["photographs"].items()
                                                  if name != "hubble_deep_field.png")
