"""``comit experiment ...``: reproduction experiments as one resumable command each.

``comit experiment structure --out DIR`` trains every arm of the shipped ``structure`` experiment
(local-crop sequences vs the global crop only vs no SREPA) over its seeds, evaluates every model,
and writes ``DIR/results.md``. Rerun the same command to continue an interrupted experiment; start
it twice (e.g. ``--threads 1 --start-threads 2`` each on a 2-core machine) and the two processes
share the units; the one that trains the shared start uses both cores while the other waits for it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .support import friendly_errors

experiment_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                             help="Reproduction experiments: train arms over seeds, evaluate, tabulate.")


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")


def _numbers(text: str | None, name: str) -> list[int] | None:
    from ..eval.protocol import parse_numbers

    return None if text is None else parse_numbers(text, int, name)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


@experiment_app.command(context_settings={"allow_extra_args": False})
@friendly_errors
def structure(
        out: Annotated[Path, typer.Option("--out", "-o", help="Experiment folder (runs/, evals/, results.md).")],
        overrides: Annotated[Optional[list[str]], typer.Argument(
            help="key=value overrides of the experiment, e.g. train.loop.max_steps=100 eval.num_images=64 "
                 "train.loop.device=cuda.")] = None,
        config: Annotated[str, typer.Option("--config", "-c", help="Shipped experiment name or YAML file.")] = "structure",
        seeds: Annotated[Optional[str], typer.Option("--seeds", help="Seeds, e.g. 0,1,2 (default: the config's).")] = None,
        arms: Annotated[Optional[str], typer.Option("--arms", help="Run only these arms, e.g. L,G.")] = None,
        device: Annotated[str, typer.Option("--device", help="Evaluation device (auto: the training device).")] = "auto",
        threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads (default: torch's).")] = None,
        start_threads: Annotated[Optional[int], typer.Option(
            "--start-threads", help="torch CPU threads while training the shared start, which every other "
                                    "process waits for (default: --threads).")] = None,
        report_only: Annotated[bool, typer.Option("--report-only", help="Only rebuild DIR/results.md from what "
                                                                         "is finished, with the settings of "
                                                                         "DIR/experiment.yaml; train nothing.")] = False,
        commit: Annotated[bool, typer.Option("--commit", help="After each finished unit, git-commit the experiment "
                                                               "folder (results and logs; weights stay out), so a "
                                                               "run outlives the machine.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars (logs stay readable).")] = False):
    """Does training on local-crop sequences make tokens line up with objects? Arms x seeds, one command."""
    import torch

    from ..experiments.config import load_experiment
    from ..experiments.report import write_experiment_report
    from ..devices import resolve_device
    from ..experiments.runner import commit_folder, git_work_tree, run_experiment

    started = time.perf_counter()
    torch.set_flush_denormal(True)
    for flag, value in (("--threads", threads), ("--start-threads", start_threads)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if threads is not None:
        torch.set_num_threads(threads)
    config = _stored_experiment(out) if report_only else config
    experiment = load_experiment(config, overrides or [], _numbers(seeds, "--seeds"), _names(arms))
    command = _command(out, overrides, config, seeds, arms, device, threads, start_threads, commit, quiet)
    where = str(resolve_device(device))
    if commit:
        git_work_tree(out)  # refused before any work, not after the first unit

    def report(unit=None) -> dict:
        results = write_experiment_report(experiment, out, command, where, time.perf_counter() - started)
        if commit and unit is not None and commit_folder(Path(out), f"{experiment.name}: arm {unit.arm}, seed "
                                                         f"{unit.seed} finished ({results['units_done']}/"
                                                         f"{results['units_total']} units)"):
            typer.echo(f"committed {out} after arm {unit.arm}, seed {unit.seed}")
        return results

    if not report_only:
        run_experiment(experiment, out, command, device=device, progress=not quiet, after_unit=report,
                       say=typer.echo, start_threads=start_threads)
    results = report()
    for claim in results["claims"]:
        typer.echo(f"{claim['compared']} on {claim['metric']}: {claim['verdict']}")
    typer.echo(f"{results['units_done']}/{results['units_total']} units finished; report: {Path(out) / 'results.md'}")


def _stored_experiment(out: Path) -> str:
    """The folder's own settings, for rebuilding its report: a shipped config may have changed since its units ran."""
    from ..experiments.runner import EXPERIMENT_FILE

    stored = Path(out) / EXPERIMENT_FILE
    if not stored.is_file():
        raise ValueError(f"{out} holds no experiment yet (no {EXPERIMENT_FILE}); run without --report-only first")
    return str(stored)


def _command(out, overrides, config, seeds, arms, device, threads, start_threads, commit, quiet) -> list[str]:
    """The command that repeats (or continues) this experiment, every choice spelled out."""
    words = ["comit", "experiment", "structure", "--out", str(out), "--config", config, "--device", device]
    for flag, value in (("--seeds", seeds), ("--arms", arms), ("--threads", threads),
                        ("--start-threads", start_threads)):
        if value is not None:
            words += [flag, str(value)]
    words += ["--commit"] * commit + ["--quiet"] * quiet
    return words + list(overrides or [])
