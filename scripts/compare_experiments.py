#!/usr/bin/env python
"""How far apart are two runs of one experiment? Per unit (arm, seed) and metric, the values of two
``results.json`` files (``comit experiment ... --out DIR`` writes one) side by side, with the
largest difference per metric: the measured nondeterminism of a rerun, e.g. of the committed run
against your fresh clone's.

    .venv/bin/python scripts/compare_experiments.py docs/results/structure-2026-12-06/results.json \\
        runs/structure/results.json [--markdown]

Only units finished in both runs are compared; the two runs' machines are printed first.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    metric: str
    unit: str
    first: float
    second: float

    @property
    def difference(self) -> float:
        return self.second - self.first


def load(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; give the results.json of an experiment folder")
    return json.loads(path.read_text())


def pairs(first: dict, second: dict) -> list[Pair]:
    """Every (metric, arm/seed) measured in both runs, in the first run's order."""
    rows = {row["metric"]: row for row in second["arm_table"]}
    found = []
    for row in first["arm_table"]:
        other = rows.get(row["metric"])
        if other is None:
            continue
        for arm, values in row["values"].items():
            for seed, value in values.items():
                twin = other["values"].get(arm, {}).get(seed)
                if value is not None and twin is not None:
                    found.append(Pair(row["metric"], f"{arm}/{seed}", value, twin))
    return found


def machine(results: dict) -> str:
    run = results.get("run", {})
    return f"{run.get('machine', '?')}, torch {run.get('torch', '?')}, {run.get('date', '?')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--markdown", action="store_true", help="a markdown table of the largest difference per metric")
    args = parser.parse_args()
    first, second = load(args.first), load(args.second)
    found = pairs(first, second)
    if not found:
        raise SystemExit("error: the two runs share no finished unit and metric; nothing to compare")
    print(f"first:  {machine(first)}\nsecond: {machine(second)}\n")
    widest: dict[str, Pair] = {}
    for pair in found:
        if pair.metric not in widest or abs(pair.difference) > abs(widest[pair.metric].difference):
            widest[pair.metric] = pair
    if args.markdown:
        print("| metric | largest difference | unit | first | second | units compared |")
        print("|---|---|---|---|---|---|")
    for metric, pair in widest.items():
        count = sum(p.metric == metric for p in found)
        if args.markdown:
            print(f"| {metric} | {pair.difference:+.4g} | {pair.unit} | {pair.first:.4g} | {pair.second:.4g} | {count} |")
        else:
            print(f"{metric:45s} {pair.difference:+10.4g}  ({pair.unit}: {pair.first:.4g} -> {pair.second:.4g}; "
                  f"{count} units)")


if __name__ == "__main__":
    main()
