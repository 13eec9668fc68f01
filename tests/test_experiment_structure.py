"""`comit experiment structure` end to end at smoke size: report, skip, exact resume, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from comit.cli import app
from comit.devices import auto_precision

runner = CliRunner()
pytestmark = pytest.mark.slow  # trains and evaluates 4 tiny models (~30 s on 2 cores)
# structure-tiny trains every unit from scratch; most tests here add a shared start (every arm continues one
# global-crop model), the runner's other mode.
START_OVERRIDE = ("start={description: the global crop only, seed: 0, overrides: {step: {global_first_p: 1.0, max_crops: 1}, "
         "optim: {batch_size: 4, warmup_steps: 1}, loop: {max_steps: 2, log_every: 1, checkpoint_every: 2, "
         "sample_every: 0, eval_every: 2, eval_images: 4}}}")
SMOKE = ["--config", "structure-tiny", "--seeds", "0,1", "--arms", "L,G", "--threads", "1", "--quiet",
         "train.loop.checkpoint_every=1", START_OVERRIDE]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run(out, *extra):
    return runner.invoke(app, ["experiment", "structure", "--out", str(out), *SMOKE, *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("structure") / "exp"
    result = run(out)
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture
def copy(finished, tmp_path):
    target = tmp_path / "exp"
    shutil.copytree(finished[0], target)
    return target


def _no_work(monkeypatch):
    """Make any training or scoring fail: a finished experiment must not need them."""
    import comit.eval.run_align
    import comit.eval.run_crops
    import comit.eval.run_probe
    import comit.eval.run_recon
    import comit.train.loop

    def refuse(*args, **kwargs):
        raise AssertionError("work was redone")

    for module, name in ((comit.train.loop, "train"), (comit.eval.run_recon, "evaluate_reconstruction"),
                         (comit.eval.run_align, "evaluate_alignment"), (comit.eval.run_probe, "evaluate_probes"),
                         (comit.eval.run_crops, "evaluate_crop_curves")):
        monkeypatch.setattr(module, name, refuse)


def test_report_has_table_claims_curves_and_plots(finished):
    out, output = finished
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["units_done"] == results["units_total"] == 4
    align = next(r for r in results["arm_table"] if r["metric"] == "align-global/miou_image")
    assert set(align["arms"]) == {"L", "G"} and all(align["arms"][a]["n"] == 2 for a in ("L", "G"))
    assert align["differences"]["G"]["n"] == 2 and align["floor"]["n"] == 4
    # Every alignment and probe row has its ceiling: the masks as maps (1 when cut at their area), the true scene.
    rows = {r["metric"]: r for r in results["arm_table"]}
    assert rows["align-global/miou_object_matched"]["ceiling"]["mean"] == pytest.approx(1.0)
    assert align["floor"]["mean"] < align["ceiling"]["mean"] < 1.0
    # A probe row's ceiling is its true-scene score over the seeds whose controls passed; the seeds
    # that failed them are left out of the row (and the row is absent when every seed failed).
    failed = {f"{c['task']}_{c['primary']}": c["failed_seeds"] for c in results["probe_controls"] if c["test"] == "test"}
    assert set(failed) == {"semantic_top1", "relational_top1"}
    for key, failed_seeds in failed.items():
        scene = [row[row["primary"]] for path in out.glob("evals/*/seed-*/probe/results.json")
                 if int(path.parent.parent.name.removeprefix("seed-")) not in failed_seeds
                 for row in json.loads(path.read_text())["rows"]
                 if row["messages"] == "scene" and f"{row['task']}_{row['primary']}" == key]
        if len(failed_seeds) == 2:
            assert f"probe/{key}" not in rows and not scene
        else:
            assert rows[f"probe/{key}"]["left_out_seeds"] == failed_seeds
            assert rows[f"probe/{key}"]["ceiling"]["mean"] == pytest.approx(sum(scene) / len(scene))
            assert len(scene) == 2 * (2 - len(failed_seeds))
    assert rows["recon-global/psnr"]["ceiling"] is None
    assert {r["arm"] for r in results["curves"]} == {"L"}  # curves for arm L only
    policies = {r["policy"] for r in results["curves"]}
    assert policies == {"raster_scan", "raster_scan+global", "adaptive", "adaptive+global"}
    assert max(r["num_crops"] for r in results["curves"] if r["policy"] == "raster_scan") == 2  # 10 > 9 locals
    assert [c["compared"] for c in results["claims"]] == ["L − G", "L, raster_scan+global: 10 − 1 crops"]
    assert "L − G on align-global/miou_image:" in output
    markdown = (out / "results.md").read_text()
    assert "Status: **complete**" in markdown and "(n=2)" in markdown and "comit train tiny --out" in markdown
    for name in ("arms_alignment_probes.png", "arms_psnr.png", "crops_miou_image.png", "crops_psnr.png",
                 "tokens_over_objects.png", "evals/G/seed-1/tokens/tokens_over_objects.png"):
        assert Image.open(out / name).format == "PNG"
    assert "## Probe controls" in markdown and "tokens_over_objects.png" in markdown
    assert all(row["machine"] and row["finished"] for row in results["units"] if row["arm"] != "start")
    # structure-tiny trains in `auto`: the record names what that was on this machine
    assert {row["precision"] for row in results["units"] if row["arm"] != "start"} == {auto_precision("cpu")}
    assert not (out / "evals" / "G" / "seed-0" / "crops").exists()
    assert [p.name for p in out.rglob(".*")] == [".gitignore"]  # no lock, no temporary files left


def test_the_arms_continue_from_one_start(finished):
    out, output = finished
    start = out / "runs" / "start" / "seed-0"
    assert (start / "unit.json").is_file() and not (out / "runs" / "start" / "seed-1").exists()
    assert output.count("start, seed 0: train") == 1
    for arm, seed in (("L", 0), ("G", 1)):
        config = (out / "runs" / arm / f"seed-{seed}" / "config.yaml").read_text()
        assert f"weights: {start / 'model'}" in config
    results = json.loads((out / "results.json").read_text())
    first = results["units"][0]
    assert first["arm"] == "start" and first["trained"] and "psnr_global_gain" in first
    assert results["train_commands"][0].startswith(f"comit train tiny --out {start} ")
    assert "## Start" in (out / "results.md").read_text()


def test_token_objects_figure_draws_each_arm(finished, tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "token_objects.py"
    figure = tmp_path / "tokens.png"
    done = subprocess.run([sys.executable, str(script), str(finished[0]), "--arms", "L", "G", "-n", "2", "-o",
                           str(figure)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    with Image.open(figure) as image:  # 2 rows of (image, L, G) panels
        assert image.format == "PNG" and image.width > image.height


def test_compare_script_puts_two_runs_side_by_side(finished, tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "compare_experiments.py"
    results = finished[0] / "results.json"
    shifted = json.loads(results.read_text())
    row = next(r for r in shifted["arm_table"] if r["metric"] == "align-global/miou_image")
    row["values"]["G"]["1"] += 0.25
    (tmp_path / "other.json").write_text(json.dumps(shifted))
    done = subprocess.run([sys.executable, str(script), str(results), str(tmp_path / "other.json"), "--markdown"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = {line.split(" | ")[0].strip("| "): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert "| +0.25 | G/1 |" in lines["align-global/miou_image"]
    assert "| +0 |" in lines["recon-global/psnr"] and lines["recon-global/psnr"].endswith("| 4 |")


def test_a_start_another_process_trains_is_waited_for(copy, monkeypatch):
    from comit.experiments.config import load_experiment
    from comit.experiments.runner import START, Unit, train_start

    _no_work(monkeypatch)
    start = Unit(START, 0)
    record = (start.run_dir(copy) / "unit.json").read_bytes()
    (start.run_dir(copy) / "unit.json").unlink()
    (copy / "runs" / "start" / ".seed-0.lock").write_text("1")  # pid 1 is alive: another process trains it
    finish = threading.Timer(0.3, lambda: (start.run_dir(copy) / "unit.json").write_bytes(record))
    said = []
    finish.start()
    train_start(load_experiment("structure-tiny", [START_OVERRIDE]), start, copy, progress=False, say=said.append,
                poll_s=0.05)
    finish.join()
    assert said == ["start, seed 0: in progress in another process, waiting for it"]


def test_the_start_trains_on_its_own_thread_count(copy, monkeypatch):
    """The other processes wait for the start, so it may take their cores; the units keep --threads."""
    import comit.experiments.runner as runner
    from comit.experiments.config import load_experiment

    start = runner.Unit(runner.START, 0)
    (start.run_dir(copy) / "unit.json").unlink()
    seen = []
    monkeypatch.setattr(runner, "train_unit", lambda *args, **kwargs: seen.append(torch.get_num_threads()))
    torch.set_num_threads(1)
    runner.train_start(load_experiment("structure-tiny", [START_OVERRIDE]), start, copy, progress=False,
                       say=lambda _: None, threads=2)
    assert seen == [2] and torch.get_num_threads() == 1


def test_rerun_skips_finished_units(copy, monkeypatch):
    _no_work(monkeypatch)
    before = (copy / "runs" / "L" / "seed-0" / "model" / "model.safetensors").stat().st_mtime_ns
    result = run(copy)
    assert result.exit_code == 0, result.output
    assert (copy / "runs" / "L" / "seed-0" / "model" / "model.safetensors").stat().st_mtime_ns == before
    assert "4/4 units finished" in result.output and result.output.count("done before") == 4


def test_a_subset_of_arms_and_more_seeds_share_the_folder(copy, monkeypatch):
    _no_work(monkeypatch)
    result = run(copy, "--arms", "G")
    assert result.exit_code == 0 and result.output.count("done before") == 2, result.output
    result = run(copy, "--seeds", "0,1,2", "--arms", "G", "--report-only")  # a third seed may be added later
    assert result.exit_code == 0 and "2/3 units finished" in result.output, result.output


def test_interrupted_training_resumes_exactly(copy):
    unit = copy / "runs" / "G" / "seed-1"
    weights = (unit / "model" / "model.safetensors").read_bytes()
    metrics = json.loads((copy / "evals" / "G" / "seed-1" / "align-global" / "results.json").read_text())["metrics"]
    # As if killed after the checkpoint of step 2: no final model, no record, no evaluation.
    shutil.rmtree(unit / "model")
    shutil.rmtree(unit / "checkpoints" / "step-000000003")
    (unit / "unit.json").unlink()
    shutil.rmtree(copy / "evals" / "G" / "seed-1")
    result = run(copy)
    assert result.exit_code == 0, result.output
    record = json.loads((unit / "unit.json").read_text())
    assert record["resumed_from"] == "step-000000002"
    assert (unit / "model" / "model.safetensors").read_bytes() == weights  # resume is exact
    again = json.loads((copy / "evals" / "G" / "seed-1" / "align-global" / "results.json").read_text())["metrics"]
    assert again == metrics  # evaluation is deterministic per seed


def test_missing_evaluation_part_is_redone_alone(copy, monkeypatch):
    import comit.eval.run_align

    shutil.rmtree(copy / "evals" / "L" / "seed-0" / "align-all")
    calls = []
    original = comit.eval.run_align.evaluate_alignment
    _no_work(monkeypatch)
    monkeypatch.setattr(comit.eval.run_align, "evaluate_alignment", lambda *a, **k: calls.append(1) or original(*a, **k))
    result = run(copy)
    assert result.exit_code == 0, result.output
    assert calls == [1] and (copy / "evals" / "L" / "seed-0" / "align-all" / "results.json").is_file()


def test_other_settings_in_the_same_folder_are_refused(copy):
    result = run(copy, "eval.num_images=7")
    assert result.exit_code == 1 and "other settings (eval.num_images)" in result.output
    result = run(copy, "train.loop.max_steps=4")
    assert result.exit_code == 1 and "other settings (train.loop.max_steps)" in result.output
    result = run(copy, "start.overrides.loop.max_steps=3")
    assert result.exit_code == 1 and "other settings (start.overrides.loop.max_steps)" in result.output


def test_a_unit_another_process_holds_is_left_to_it(copy, monkeypatch):
    _no_work(monkeypatch)
    shutil.rmtree(copy / "evals" / "L" / "seed-1" / "probe")
    (copy / "runs" / "L" / ".seed-1.lock").write_text("1")  # pid 1 is alive: another process has the unit
    result = run(copy)
    assert result.exit_code == 0, result.output
    assert "arm L, seed 1: in progress in another process" in result.output and "3/4 units finished" in result.output
    assert "PARTIAL: 3 of 4" in (copy / "results.md").read_text()
    (copy / "runs" / "L" / ".seed-1.lock").write_text("999999999")  # a dead owner's lock is taken over
    monkeypatch.undo()
    result = run(copy)
    assert result.exit_code == 0 and "4/4 units finished" in result.output, result.output


def test_report_only_rebuilds_without_work(copy, monkeypatch):
    _no_work(monkeypatch)
    (copy / "results.md").unlink()
    result = run(copy, "--report-only")
    assert result.exit_code == 0, result.output
    assert "Status: **complete**" in (copy / "results.md").read_text()


def test_report_only_describes_the_folder_not_the_shipped_config(copy, monkeypatch):
    """A shipped config changes after a folder's units ran (structure.yaml went from 2,000 to 3,000
    steps): rebuilding the folder's report must describe the settings its units ran with."""
    _no_work(monkeypatch)
    result = runner.invoke(app, ["experiment", "structure", "--out", str(copy), "--config", "structure", "--report-only"])
    assert result.exit_code == 0, result.output
    steps = yaml.safe_load((copy / "experiment.yaml").read_text())["train"]["loop"]["max_steps"]
    markdown = (copy / "results.md").read_text()
    assert f"| budget per arm and seed | {steps} steps x" in markdown and steps != 3000
    assert f"--config {copy / 'experiment.yaml'}" in markdown  # the command that continues it


def test_units_below_the_gate_are_reported_and_not_compared(copy, monkeypatch):
    _no_work(monkeypatch)
    result = run(copy, "--report-only", "eval.gate={policy: global, min_gain_db: 1000}")
    assert result.exit_code == 0, result.output
    report = (copy / "results.md").read_text()
    assert "## Working-tokenizer gate" in report
    assert "Failed, left out of every table and claim below: L/seed-0, G/seed-0, L/seed-1, G/seed-1" in report
    results = json.loads((copy / "results.json").read_text())
    assert results["arm_table"] == [] and all(c["verdict"] == "not measured yet" for c in results["claims"])
    assert [row["passed"] for row in results["gate"]] == [False] * 4


@pytest.mark.parametrize("extra, message", [
    (["arms.G.overrides.loop.max_steps=5"], "same training budget"),
    (["train.loop.bogus=1"], "arm L: "),
    (["eval.curves.arms=[X]"], "unknown arm"),
    (["--arms", "L,Q"], "unknown arm(s) ['Q']"),
    (["--seeds", "0,0"], "seeds repeat"),
    (["--start-threads", "0"], "--start-threads must be >= 1, got 0"),
])
def test_bad_experiments_fail_before_any_work(tmp_path, extra, message):
    result = run(tmp_path / "never", *extra)
    assert result.exit_code == 1 and message in result.output, result.output
    assert result.output.startswith("error:") and not (tmp_path / "never").exists()


def test_report_only_needs_an_experiment(tmp_path):
    result = run(tmp_path / "empty", "--report-only")
    assert result.exit_code == 1 and "no experiment yet" in result.output


# ---------------------------------------------------------------------- a run that outlives the machine
SCRATCH = ["--config", "structure-tiny", "--seeds", "0", "--arms", "L,G", "--threads", "1", "--quiet", "--commit"]


def _git(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def committed(tmp_path, monkeypatch):
    """A git repository whose experiment folder was run with --commit: (repo, experiment folder)."""
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@example.com")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("runs/\n")  # as this project's: run folders are ignored anywhere
    (repo / "other.txt").write_text("work in progress\n")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "-q", "-m", "start")
    _git(repo, "add", "other.txt")  # staged work of the user's must stay out of the experiment's commits
    out = repo / "docs" / "results" / "exp"
    result = runner.invoke(app, ["experiment", "structure", "--out", str(out), *SCRATCH])
    assert result.exit_code == 0, result.output
    assert "committed" in result.output and "after arm G, seed 0" in result.output
    return repo, out


def _report(out) -> dict:
    results = json.loads((out / "results.json").read_text())
    results.pop("run")  # this session's time and machine
    return results


def test_each_finished_unit_is_committed_without_its_weights(committed):
    repo, out = committed
    messages = _git(repo, "log", "--format=%s").splitlines()
    assert messages[:2] == ["structure-tiny: arm G, seed 0 finished (2/2 units)",
                            "structure-tiny: arm L, seed 0 finished (1/2 units)"]
    kept = _git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    assert "docs/results/exp/runs/L/seed-0/unit.json" in kept and "docs/results/exp/results.md" in kept
    assert "docs/results/exp/evals/G/seed-0/probe/results.json" in kept
    assert not [f for f in kept if f.endswith(".safetensors") or "/checkpoints/" in f or f.endswith(".lock")]
    assert "other.txt" not in kept and "A  other.txt" in _git(repo, "status", "--short")


def test_a_fresh_clone_resumes_on_the_committed_units_alone(committed, tmp_path, monkeypatch):
    repo, out = committed
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    again = clone / "docs" / "results" / "exp"
    assert not list(again.rglob("*.safetensors"))  # the weights stayed behind
    _no_work(monkeypatch)
    result = runner.invoke(app, ["experiment", "structure", "--out", str(again), *SCRATCH])
    assert result.exit_code == 0, result.output
    assert result.output.count("done before") == 2 and "2/2 units finished" in result.output
    assert _report(again) == _report(out)
    # Nothing new but the rebuilt report (its Run section names this session), nothing left behind.
    assert sorted(_git(clone, "status", "--short").splitlines()) == [" M docs/results/exp/results.json",
                                                                     " M docs/results/exp/results.md"]


def test_a_unit_whose_model_is_gone_before_its_evaluation_is_trained_again(committed, tmp_path):
    repo, out = committed
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    again = clone / "docs" / "results" / "exp"
    shutil.rmtree(again / "evals" / "G" / "seed-0" / "probe")  # the machine stopped during G's evaluation
    result = runner.invoke(app, ["experiment", "structure", "--out", str(again), *SCRATCH])
    assert result.exit_code == 0, result.output
    assert "arm G, seed 0: train" in result.output and "2/2 units finished" in result.output
    assert (again / "evals" / "G" / "seed-0" / "probe" / "results.json").is_file()


def test_commit_outside_a_git_work_tree_is_refused_before_any_work(tmp_path):
    result = runner.invoke(app, ["experiment", "structure", "--out", str(tmp_path / "exp"), *SCRATCH])
    assert result.exit_code == 1 and "--commit needs the experiment folder inside a git work tree" in result.output
    assert not (tmp_path / "exp").exists()


def test_the_gpu_experiment_runs_at_tiny_size_on_the_cpu(tmp_path):
    # structure-gpu as shipped (its data, latents, arms, claims, bf16 training), shrunk to seconds.
    tiny = ["train.model.hidden_size=32", "train.model.depth=3", "train.model.num_heads=2", "train.step.projector_hidden=32",
            "train.optim.batch_size=4", "train.optim.warmup_steps=1", "train.optim.decay_steps=1", "train.loop.max_steps=2",
            "train.step.global_warmup_steps=1",
            "train.loop.eval_every=2", "train.loop.eval_images=4", "train.loop.checkpoint_every=2", "train.loop.device=cpu",
            "eval.num_images=4", "eval.num_train=16", "eval.num_test=8", "eval.batch_size=4", "eval.steps=1",
            "eval.fid_features=none", "eval.probe_epochs=1", "eval.curves.num_images=2", "eval.curves.crop_counts=[1,2]",
            "eval.curves.steps=1", "eval.gate=null"]
    result = runner.invoke(app, ["experiment", "structure", "--out", str(tmp_path / "gpu"), "--config", "structure-gpu",
                                 "--seeds", "0", "--threads", "1", "--quiet", *tiny])
    assert result.exit_code == 0, result.output
    assert "2/2 units finished" in result.output
    config = json.loads((tmp_path / "gpu" / "runs" / "L" / "seed-0" / "unit.json").read_text())
    assert "init.weights" not in config["command"]  # from a fresh model
    assert "loop.precision=bf16" in config["command"]


def test_a_unit_committed_mid_training_starts_again_with_clean_logs(committed, tmp_path):
    repo, out = committed
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    again = clone / "docs" / "results" / "exp"
    unit = again / "runs" / "G" / "seed-0"
    # As committed while G was training: its logs, no record, no evaluation, no checkpoints.
    (unit / "unit.json").unlink()
    shutil.rmtree(again / "evals" / "G" / "seed-0")
    with (unit / "metrics.jsonl").open("a") as log:
        log.write(json.dumps({"step": 999, "loss": 1.0}) + "\n")
    result = runner.invoke(app, ["experiment", "structure", "--out", str(again), *SCRATCH])
    assert result.exit_code == 0, result.output
    assert "arm G, seed 0: train" in result.output and "2/2 units finished" in result.output
    steps = [json.loads(line)["step"] for line in (unit / "metrics.jsonl").read_text().splitlines()]
    assert 999 not in steps and steps == sorted(steps)


def test_a_unit_records_the_code_its_process_started_with(monkeypatch):
    """A commit made while a long unit trains must not be credited with it: the version is read once."""
    from comit.experiments import runner

    versions = iter(["aaaaaaa", "bbbbbbb"])
    monkeypatch.setattr(runner, "code_version", lambda: next(versions))
    runner.code_at_start.cache_clear()
    try:
        assert runner.code_at_start() == "aaaaaaa" and runner.code_at_start() == "aaaaaaa"
    finally:
        runner.code_at_start.cache_clear()


def test_differing_settings_are_named_by_their_dotted_keys():
    from comit.experiments.runner import differing_keys

    before = {"train": {"loop": {"max_steps": 4, "seed": 0}, "step": {}}, "seeds": [0]}
    now = {"train": {"loop": {"max_steps": 5, "seed": 0}, "step": {"global_warmup_steps": 750}}, "seeds": [0]}
    assert differing_keys(before, now) == ["train.loop.max_steps", "train.step.global_warmup_steps"]
