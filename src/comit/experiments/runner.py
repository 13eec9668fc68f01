"""Run an experiment: train every (arm, seed), evaluate each model, resumable unit by unit.

Nothing here trains or measures by itself: training is ``comit.train.loop.train`` and every
score is one of the ``comit.eval`` functions. The runner decides what runs where and skips what
is done, so an interrupted experiment continues where it stopped:

* a unit's training is done when ``runs/<arm>/seed-<s>/unit.json`` exists (written after the
  final model); a run with checkpoints but no ``unit.json`` resumes from its newest checkpoint;
* an evaluation part is done when ``evals/<arm>/seed-<s>/<part>/results.json`` exists (the
  report writers write it last, atomically).

Units run seed by seed (every arm of seed 0, then seed 1, ...), so a stopped experiment has
comparable arms with fewer seeds rather than one arm with all of them. With a ``start`` section
the arms of a seed continue from a start model (``runs/start/seed-<s>``), trained before its first
arm; a process that finds the start in another process's hands waits for it.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ..devices import describe_device, resolve_device, resolve_precision, torch_threads
from ..io import atomic_write, atomic_write_json
from ..train.checkpoint import ResumeError, latest_checkpoint
from ..train.config import TrainConfig, dump_config
from ..train.run_log import METRICS_FILE, last_line, logged_train_seconds
from ..train.step import LOSS_TERMS
from .config import START, ExperimentConfig

if TYPE_CHECKING:
    from ..eval.results import EvalResult

UNIT_FILE = "unit.json"
MODEL_DIR = "model"  # where ``comit.train.loop.train`` puts the final model inside a run folder
EXPERIMENT_FILE = "experiment.yaml"
# An experiment folder may live in a git work tree (``docs/results/...``) and be committed unit by
# unit: its results and logs are kept, its weights are not (they are large and rebuilt by training).
# ``!runs/`` undoes a parent folder's ``runs/`` rule (this repository ignores run folders anywhere).
GITIGNORE = """# Written by comit experiment: results and logs are kept, weights and locks are not.
!runs/
checkpoints/
model/
*.safetensors
*.lock
*.tmp
"""


@dataclass(frozen=True)
class Unit:
    """One trained model: an arm and a seed."""

    arm: str
    seed: int

    def run_dir(self, out: Path) -> Path:
        return Path(out) / "runs" / self.arm / f"seed-{self.seed}"

    def eval_dir(self, out: Path) -> Path:
        return Path(out) / "evals" / self.arm / f"seed-{self.seed}"


def units(config: ExperimentConfig) -> list[Unit]:
    """Seed-major order: every arm of the first seed, then of the next."""
    return [Unit(arm, seed) for seed in config.seeds for arm in config.arms]


def start_unit(config: ExperimentConfig, seed: int) -> Unit | None:
    """The start the arms of ``seed`` continue from (None: they train from a fresh model)."""
    start_seed = config.start_seed(seed)
    return None if start_seed is None else Unit(START, start_seed)


def start_units(config: ExperimentConfig) -> list[Unit]:
    """Every start the experiment trains, in the order the seeds need them."""
    return list(dict.fromkeys(u for u in (start_unit(config, s) for s in config.seeds) if u is not None))


def unit_overrides(config: ExperimentConfig, unit: Unit, out: Path) -> dict:
    """The training overrides of a unit (an arm's or a start's) in the experiment folder ``out``."""
    if unit.arm == START:
        return config.start_overrides(unit.seed)
    start = start_unit(config, unit.seed)
    return config.train_overrides(unit.arm, unit.seed, None if start is None else str(start.run_dir(out) / MODEL_DIR))


def unit_config(config: ExperimentConfig, unit: Unit, out: Path) -> TrainConfig:
    what = START if unit.arm == START else f"arm {unit.arm}"
    return config.resolve(what, unit_overrides(config, unit, out))


# ---------------------------------------------------------------------- the experiment folder
def prepare_output(config: ExperimentConfig, out: Path) -> None:
    """Write ``experiment.yaml``; refuse a folder that holds an experiment with other settings.

    Other seeds and arms are fine (they add or leave out units; the file keeps the union), and
    claims only change the report; anything else would mix results made two ways."""
    out = Path(out)
    path = out / EXPERIMENT_FILE
    now = config.model_dump(mode="json")
    if path.is_file():
        before = yaml.safe_load(path.read_text()) or {}
        old, new = _comparable(before), _comparable(now)
        changed = differing_keys(old, new)
        if changed:
            raise ResumeError(f"{out} holds an experiment with other settings ({', '.join(changed[:4])}); use the "
                              "same settings to continue it, or another --out")
        for arm, settings in now["arms"].items():
            kept = before.get("arms", {}).get(arm, settings)
            if kept != settings:
                raise ResumeError(f"{out} holds arm {arm} with other settings ({', '.join(differing_keys(kept, settings))}); "
                                  "use the same settings or another --out")
        curve_arms = before.get("eval", {}).get("curves", {}).get("arms", [])
        now = {**now, "seeds": sorted(set(before.get("seeds", [])) | set(now["seeds"])),
               "arms": {**before.get("arms", {}), **now["arms"]}}
        now["eval"]["curves"]["arms"] = list(dict.fromkeys(curve_arms + now["eval"]["curves"]["arms"]))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(yaml.safe_dump(now, sort_keys=False)))
    if not (out / ".gitignore").is_file():
        atomic_write(out / ".gitignore", lambda tmp: Path(tmp).write_text(GITIGNORE))


@contextmanager
def unit_lock(out: Path, unit: Unit) -> Iterator[bool]:
    """Claim a unit for this process; yields False when another live process holds it.

    So the same command started twice (e.g. one process per core) splits the units between
    the processes instead of training any twice; a lock left by a killed process is taken over."""
    lock = Path(out) / "runs" / unit.arm / f".seed-{unit.seed}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = lock.read_text().strip()
        if owner.isdigit() and int(owner) != os.getpid() and _alive(int(owner)):
            yield False
            return
        lock.unlink(missing_ok=True)
        handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with os.fdopen(handle, "w") as file:
        file.write(str(os.getpid()))
    try:
        yield True
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _comparable(dumped: dict) -> dict:
    """What two runs into one folder must share: all but the seeds, arms, claims, the gate and
    which arms get crop curves (selecting arms with --arms changes only those; claims and the gate
    change only the report)."""
    settings = {k: v for k, v in dumped.items() if k not in ("seeds", "arms", "claims")}
    evaluation = {k: v for k, v in settings.get("eval", {}).items() if k != "gate"}
    curves = {k: v for k, v in evaluation.get("curves", {}).items() if k != "arms"}
    return {**settings, "eval": {**evaluation, "curves": curves}}


# ---------------------------------------------------------------------- training
def train_command(config: ExperimentConfig, unit: Unit, out: Path) -> str:
    """The ``comit train`` command that trains this unit on its own."""
    words = ["comit", "train", config.base, "--out", str(unit.run_dir(out))]
    for key, value in unit_overrides(config, unit, out).items():
        words.append(f"{key}={value if isinstance(value, str) else json.dumps(value)}")
    return shlex.join(words)


def train_unit(config: ExperimentConfig, unit: Unit, out: Path, progress: bool = True) -> dict:
    """Train one unit unless it is done; returns its record (model folder, wall time, command)."""
    from ..train.loop import train

    run_dir = unit.run_dir(out)
    resolved = unit_config(config, unit, out)
    record_path = run_dir / UNIT_FILE
    if record_path.is_file():
        _check_same_training(run_dir, resolved)
        record = json.loads(record_path.read_text())
        if (run_dir / record["model"]).is_dir() or unit.arm != START and unit_evaluated(config, unit, out):
            return record
        # Trained, but its model is gone before its evaluation finished (a fresh clone of committed
        # results, a new machine): the logs alone cannot be evaluated, so the unit is trained again.
        forget_unit(config, unit, out)
    resume_from = latest_checkpoint(run_dir / "checkpoints")
    if resume_from is not None:
        _check_same_training(run_dir, resolved)
    elif run_dir.exists():
        # Logs without a checkpoint (committed mid-training, the checkpoints left on another machine):
        # the unit starts again from a fresh model, so its old lines must not mix with the new ones.
        import shutil

        shutil.rmtree(run_dir)
    started = time.perf_counter()
    model_dir = train(resolved, run_dir, resume=resume_from is not None, progress=progress)
    record = {"arm": unit.arm, "seed": unit.seed, "model": str(model_dir.relative_to(run_dir)),
              "wall_time_s": logged_train_seconds(run_dir / METRICS_FILE, resolved.optim.batch_size)
                             or round(time.perf_counter() - started, 1),
              "resumed_from": resume_from.name if resume_from is not None else None,
              "steps": resolved.loop.max_steps, "batch_size": resolved.optim.batch_size,
              "precision": resolve_precision(resolved.loop.precision, resolve_device(resolved.loop.device)),
              "command": train_command(config, unit, out), "code": code_at_start(),
              **where_and_when(resolved.loop.device), "final": _final_losses(run_dir)}
    atomic_write_json(record_path, record)
    return record


def where_and_when(device: str) -> dict:
    """The machine (host, device, torch threads) and the time a unit's training finished, for the report."""
    import datetime
    import platform

    import torch

    return {"machine": f"{platform.node()}: {describe_device(resolve_device(device))}",
            "threads": torch.get_num_threads(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def forget_unit(config: ExperimentConfig, unit: Unit, out: Path) -> None:
    """Remove what a unit left (its run folder, and its evaluation unless it is a start) so it trains anew."""
    import shutil

    shutil.rmtree(unit.run_dir(out), ignore_errors=True)
    if unit.arm != START:
        shutil.rmtree(unit.eval_dir(out), ignore_errors=True)


def train_start(config: ExperimentConfig, start: Unit, out: Path, progress: bool = True,
                say: Callable[[str], None] = print, poll_s: float = 30.0, threads: int | None = None) -> None:
    """Train a start unless it is done; while another live process trains it, wait for it.

    ``threads``: torch CPU threads for the start's training (None: as set). Every other process
    of the experiment waits for the start, so it may use the cores they would have used."""
    waiting = False
    while not (start.run_dir(out) / UNIT_FILE).is_file():
        with unit_lock(out, start) as mine:
            if mine:
                say(f"start, seed {start.seed}: train")
                with torch_threads(threads):
                    train_unit(config, start, out, progress)
                return
        if not waiting:
            say(f"start, seed {start.seed}: in progress in another process, waiting for it")
            waiting = True
        time.sleep(poll_s)
    _check_same_training(start.run_dir(out), unit_config(config, start, out))


@cache
def code_at_start() -> str | None:
    """``code_version()`` when this process first asked (``run_experiment`` asks before any work): the
    code it runs was imported then, and later commits to the work tree do not change it."""
    return code_version()


def code_version() -> str | None:
    """The git commit of the code that trained a unit (``+dirty`` with local changes), or None
    outside a git checkout: results made by other code are flagged in the report, not mixed silently."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", str(here.parent)], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def git_work_tree(folder: Path) -> Path:
    """The top of the git work tree that holds ``folder`` (a one-line error outside one)."""
    import subprocess

    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.is_dir())  # the folder may not exist yet
    found = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=existing, capture_output=True, text=True,
                           timeout=30)
    if found.returncode != 0:
        raise ValueError(f"--commit needs the experiment folder inside a git work tree; {folder} is not in one "
                         "(put --out under a clone, e.g. docs/results/NAME, or leave out --commit)")
    return Path(found.stdout.strip())


def commit_folder(folder: Path, message: str) -> bool:
    """Commit the experiment folder alone (its ``.gitignore`` keeps weights out); other staged or
    changed files of the work tree are left as they are. False when there was nothing new."""
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=120)

    git_work_tree(folder)
    added = git("add", "--", ".")
    if added.returncode != 0:
        raise RuntimeError(f"git add in {folder} failed: {added.stderr.strip()}")
    if git("diff", "--cached", "--quiet", "--", ".").returncode == 0:
        return False
    done = git("commit", "-q", "-m", message, "--", ".")
    if done.returncode != 0:
        raise RuntimeError(f"git commit in {folder} failed: {done.stderr.strip()}")
    return True


def _check_same_training(run_dir: Path, resolved: TrainConfig) -> None:
    """Refuse a run folder trained with other settings. A start's model folder (``init.weights``
    inside the experiment folder) is left out: it moves with the folder, and the start itself is
    checked on its own before any arm uses it."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    before, now = yaml.safe_load(saved.read_text()), yaml.safe_load(dump_config(resolved))
    for settings in (before, now):
        weights = settings.get("init", {}).get("weights")
        if weights is not None and Path(weights).parent.parent.name == START:
            settings["init"]["weights"] = f"{START}/{Path(weights).parent.name}"
    if before != now:
        raise ResumeError(f"{run_dir} was trained with other settings than this experiment asks for "
                          f"({', '.join(differing_keys(before, now)[:4])}); use the same settings or another --out")


def differing_keys(before: dict, now: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested settings (``step.global_warmup_steps``)."""
    keys = []
    for key in sorted(set(before) | set(now), key=str):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            keys += differing_keys(old, new, f"{prefix}{key}.")
        elif old != new:
            keys.append(f"{prefix}{key}")
    return keys


def _final_losses(run_dir: Path) -> dict:
    """The last logged loss and its terms (metrics.jsonl), for the report; the terms are the ones
    a training step can produce (``LOSS_TERMS``), so a new term needs no change here."""
    last = last_line(run_dir / METRICS_FILE)
    return {k: last[k] for k in ("step", "loss", *LOSS_TERMS) if k in last}


# ---------------------------------------------------------------------- evaluation
@dataclass
class EvalData:
    """The images every model is scored on (the same for every unit)."""

    val: object
    probe_train: object
    probe_test: object
    curve_images: object


def eval_data(config: ExperimentConfig, image_size: int) -> EvalData:
    from ..eval.protocol import load_dataset
    from ..eval.run_probe import probe_datasets

    settings = config.eval
    probe_train, probe_test, _ = probe_datasets(settings.data, image_size, num_train=settings.num_train,
                                                num_test=settings.num_test)
    return EvalData(val=load_dataset(settings.data, image_size, "val", settings.num_images), probe_train=probe_train,
                    probe_test=probe_test,
                    curve_images=load_dataset(settings.data, image_size, "val", settings.curves.num_images))


def eval_parts(config: ExperimentConfig, unit: Unit, model, data: EvalData,
               progress: bool) -> dict[str, tuple[Callable[[], EvalResult], Callable[[Path, EvalResult], None]]]:
    """Each evaluation part of a unit: (compute the results, write their report)."""
    from ..eval.protocol import EvalSettings
    from ..eval.run_align import (AlignSettings, best_token_examples, evaluate_alignment, write_align_report,
                                  write_token_examples)
    from ..eval.run_crops import CurveSettings, evaluate_crop_curves, write_crops_report
    from ..eval.run_probe import ProbeSettings, evaluate_probes, probe_policy, write_probe_report
    from ..eval.run_recon import evaluate_reconstruction, reconstruction_examples, write_recon_report

    ev = config.eval
    common = dict(steps=ev.steps, cfg=ev.cfg, seed=unit.seed, batch_size=ev.batch_size, progress=progress)
    chosen = {"epochs": ev.probe_epochs, "patience": ev.probe_patience}
    probe = ProbeSettings(**{k: v for k, v in chosen.items() if v is not None}, seed=unit.seed,
                          controls=ev.probe_controls)
    parts = {}
    for name, policy in ev.policies.items():
        settings = EvalSettings(order=policy.order, num_crops=policy.num_crops, global_crop=policy.global_crop,
                                **common)

        def recon_report(path, results, settings=settings):
            write_recon_report(path, results, reconstruction_examples(model, data.val, settings))

        parts[f"recon-{name}"] = (partial(evaluate_reconstruction, model, data.val, settings, ev.fid_features),
                                  recon_report)
        parts[f"align-{name}"] = (partial(evaluate_alignment, model, data.val, settings, AlignSettings()),
                                  write_align_report)
    first = next(iter(ev.policies.values()))  # what every arm was trained to read: the figure's policy
    figure_policy = EvalSettings(order=first.order, num_crops=first.num_crops, global_crop=first.global_crop,
                                 **common)
    parts["tokens"] = (partial(best_token_examples, model, data.val, figure_policy),
                       partial(write_token_examples, dataset=data.val, label=f"arm {unit.arm}, seed {unit.seed}"))
    parts["probe"] = (partial(evaluate_probes, model, data.probe_train, data.probe_test,
                              probe_policy(seed=unit.seed, batch_size=ev.batch_size, progress=progress), probe),
                      write_probe_report)
    if unit.arm in ev.curves.arms:
        curves = ev.curves
        settings = EvalSettings(**{**common, "steps": curves.steps or ev.steps})
        curve_settings = CurveSettings(orders=curves.orders, global_crop=curves.global_crop,
                                       crop_counts=curves.crop_counts, metrics=curves.metrics)
        parts["crops"] = (partial(evaluate_crop_curves, model, data.curve_images, settings, curve_settings,
                                  fid_features="none", probe_train=data.probe_train if "probe" in curves.metrics
                                  else None, probe=probe), write_crops_report)
    return parts


def part_names(config: ExperimentConfig, unit: Unit) -> list[str]:
    """The evaluation parts of a unit, as ``eval_parts`` names them."""
    names = [f"{kind}-{policy}" for policy in config.eval.policies for kind in ("recon", "align")] + ["tokens", "probe"]
    return names + (["crops"] if unit.arm in config.eval.curves.arms else [])


def part_kind(name: str) -> str:
    """``recon-global`` -> ``recon``: the evaluation a part runs (``comit.eval.run_suite.RESULT_TYPES``)."""
    return name.split("-", 1)[0]


def unit_evaluated(config: ExperimentConfig, unit: Unit, out: Path) -> bool:
    return all((unit.eval_dir(out) / name / "results.json").is_file() for name in part_names(config, unit))


def evaluate_unit(config: ExperimentConfig, unit: Unit, out: Path, model_dir: Path, device: str,
                  command: list[str], progress: bool = True) -> dict[str, EvalResult]:
    """Every evaluation part of one unit (skipping finished parts); returns each part's results:
    those computed now as they were computed, those found finished as read back."""
    from ..eval.report import provenance
    from ..eval.run_suite import read_result
    from ..model.comit import COMiT

    eval_dir = unit.eval_dir(out)
    if unit_evaluated(config, unit, out):
        return {name: read_result(eval_dir / name, part_kind(name)) for name in part_names(config, unit)}
    model = COMiT.from_pretrained(model_dir).to(device).eval()
    data = eval_data(config, model.config.image_size)
    finished = {}
    for name, (compute, write) in eval_parts(config, unit, model, data, progress).items():
        target = eval_dir / name
        if (target / "results.json").is_file():
            finished[name] = read_result(target, part_kind(name))
            continue
        started = time.perf_counter()
        results = compute()
        finished[name] = results.finished(str(model_dir), config.eval.data,
                                          provenance(model.device, time.perf_counter() - started, command))
        write(target, finished[name])
    return finished


# ---------------------------------------------------------------------- everything
def run_experiment(config: ExperimentConfig, out: Path, command: list[str], device: str = "auto",
                   progress: bool = True, after_unit: Callable[[Unit], None] | None = None,
                   say: Callable[[str], None] = print, start_threads: int | None = None) -> list[Unit]:
    """Train and evaluate every unit not yet done; ``after_unit`` runs after each (the report);
    ``start_threads``: CPU threads for training a start (see ``train_start``).

    Units another live process is working on are left to it; they are returned. Units found
    finished are not reported on again (nothing changed)."""
    out = Path(out)
    code_at_start()
    prepare_output(config, out)
    todo, elsewhere = units(config), []
    for number, unit in enumerate(todo, start=1):
        where = f"[{number}/{len(todo)}] arm {unit.arm}, seed {unit.seed}"
        with unit_lock(out, unit) as mine:
            if not mine:
                say(f"{where}: in progress in another process, left to it")
                elsewhere.append(unit)
                continue
            if (unit.run_dir(out) / UNIT_FILE).is_file() and unit_evaluated(config, unit, out):
                _check_same_training(unit.run_dir(out), unit_config(config, unit, out))
                say(f"{where}: done before")
                continue
            start = start_unit(config, unit.seed)
            if start is not None:
                train_start(config, start, out, progress, say, threads=start_threads)
            say(f"{where}: train")
            record = train_unit(config, unit, out, progress)
            say(f"{where}: evaluate")
            evaluate_unit(config, unit, out, unit.run_dir(out) / record["model"],
                          str(resolve_device(_device(config, unit, device))), command, progress)
        if after_unit is not None:
            after_unit(unit)
    return elsewhere


def _device(config: ExperimentConfig, unit: Unit, device: str) -> str:
    """The evaluation device: the one given, else the training config's."""
    return device if device != "auto" else config.train_config(unit.arm, unit.seed).loop.device
