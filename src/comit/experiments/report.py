"""``DIR/results.md`` and ``DIR/results.json`` of an experiment, with its plots.

Rebuilt from the per-unit files after every unit, so a stopped experiment always has an
up-to-date partial report (each cell says over how many seeds it is taken).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..eval.report import fmt, key_values, markdown_table, provenance, write_results
from ..eval.run_align import DEFAULT_QS
from ..train.run_log import METRICS_FILE, VAL_FILE, last_line, logged_train_seconds
from ..train.step import LOSS_TERMS
from .aggregate import (arm_table, check_claims, collapsed_units, control_table, curve_table, failed_gate,
                        gate_gains, load_parts, load_training)
from .config import ExperimentConfig
from .runner import start_units, unit_config, unit_evaluated, units
from .statistics import Estimate

_START_SCORES = ("psnr_global", "psnr_global_gain")  # a start's held-out global-crop score, from val.jsonl
_BAR_METRICS = ("miou_image", "miou_object", "miou_object_matched", "semantic_top1", "compositional_unseen_pairs_top5", "relational_top1")


def cell(estimate: dict | None, digits: int = 3) -> str:
    """``0.531 ± 0.042 (n=3)``; a dash when nothing was measured."""
    if estimate is None:
        return "–"
    text = Estimate(estimate["mean"], estimate["ci95"], estimate["n"]).text(digits)
    return f"{text} (n={estimate['n']})"


def build_results(config: ExperimentConfig, out: Path, command: list[str], device: str,
                  session_seconds: float) -> dict:
    """Everything the report shows, as JSON-ready data."""
    measured = load_parts(config, out)
    failed = failed_gate(config, measured)
    parts = {unit: unit_parts for unit, unit_parts in measured.items() if unit not in failed}
    training = load_training(config, out)
    all_units = units(config)
    done = [u for u in all_units if u in training and unit_evaluated(config, u, out)]
    unit_rows = [_start_row(unit, training.get(unit), out) for unit in start_units(config)]
    for unit in all_units:
        record = training.get(unit, {})
        eval_seconds = sum((p.run or {}).get("wall_time_s", 0.0) for p in measured.get(unit, {}).values())
        unit_rows.append({"arm": unit.arm, "seed": unit.seed, "trained": unit in training,
                          "evaluated": unit in done, "train_s": _train_seconds(unit, record, out),
                          "eval_s": round(eval_seconds, 1) if unit in measured else None,
                          "resumed_from": record.get("resumed_from"), "code": record.get("code"),
                          "precision": record.get("precision") or (_pinned_precision(config, unit, out) if record else None),
                          **_machine_and_finish(record, measured.get(unit, {})), **record.get("final", {})})
    total = sum((r["train_s"] or 0) + (r["eval_s"] or 0) for r in unit_rows)
    codes = sorted({str(r["code"]) for r in unit_rows if r["trained"]})
    return {"name": config.name, "complete": len(done) == len(all_units),
            "units_done": len(done), "units_total": len(all_units),
            "arm_table": arm_table(config, parts), "curves": curve_table(config, parts),
            "probe_controls": control_table(parts),
            "claims": check_claims(config, parts), "units": unit_rows,
            "train_commands": [training[u]["command"] for u in [*start_units(config), *all_units] if u in training],
            "config": config.model_dump(mode="json"), "setup": describe_setup(config),
            "compute_s": round(total, 1), "code_versions": codes,
            "collapsed": [f"{u.arm}/seed-{u.seed}" for u in collapsed_units(parts)],
            "gate": _gate_rows(config, measured, failed),
            "run": {**provenance(device, session_seconds, command), "experiment_command": shlex.join(command)}}


def _train_seconds(unit, record: dict, out: Path) -> float | None:
    """A trained unit's training time from its committed log (every resume counted), else its record's:
    records written before logs carried ``train_s`` counted only the process that finished the unit."""
    if not record:
        return None
    logged = logged_train_seconds(unit.run_dir(out) / METRICS_FILE, record.get("batch_size", 0))
    return logged if logged else record.get("wall_time_s")


def _pinned_precision(config: ExperimentConfig, unit, out: Path) -> str | None:
    """A unit recorded before records named the precision trained in what its config pinned (not ``auto``)."""
    precision = unit_config(config, unit, out).loop.precision
    return None if precision == "auto" else precision


def _machine_and_finish(record: dict, parts: dict) -> dict:
    """The machine a unit ran on and when it finished: its training record's, else (units recorded
    before records named them) its evaluation's, which ran in the same process right after."""
    runs = [part.run for part in parts.values() if getattr(part, "run", None)]
    last = max(runs, key=lambda run: run.get("date", "")) if runs else {}
    return {"machine": record.get("machine") or last.get("machine"), "finished": last.get("date") or record.get("date")}


def _start_row(unit, record: dict | None, out: Path) -> dict:
    """A start's line of the Units table, with the last point of its held-out curve (``val.jsonl``):
    whether it reads its message before the arms continue from it."""
    record = record or {}
    held_out = last_line(unit.run_dir(out) / VAL_FILE)
    return {"arm": unit.arm, "seed": unit.seed, "trained": bool(record), "evaluated": None,
            "train_s": _train_seconds(unit, record, out), "eval_s": None, "resumed_from": record.get("resumed_from"),
            "code": record.get("code"), **record.get("final", {}),
            **{key: held_out[key] for key in _START_SCORES if key in held_out}}


def _gate_rows(config: ExperimentConfig, measured: dict, failed: list) -> list[dict]:
    return [{"unit": f"{unit.arm}/seed-{unit.seed}", "gain_db": None if gain is None else round(gain, 3),
             "passed": None if gain is None else unit not in failed}
            for unit, gain in gate_gains(config, measured).items()]


def describe_setup(config: ExperimentConfig) -> dict:
    """Model, data and budget of the first arm (all arms share them but for their own overrides)."""
    from ..model.transformer import Transformer

    first = next(iter(config.arms))
    train = config.train_config(first, config.seeds[0])
    model = train.model
    predictor_params = sum(p.numel() for p in Transformer(**model.predictor_kwargs()).parameters())
    return {"base config": config.base, "model": f"hidden {model.hidden_size}, depth {model.depth}, "
            f"{model.num_heads} heads, {predictor_params / 1e6:.2f} M parameters",
            "message": f"{model.num_msg_tokens} tokens, FSQ levels {list(model.fsq_levels)}",
            "geometry": f"{model.image_size} px images, {model.autoencoder.kind} latents, patch {model.patch_size}, "
            f"{model.crop_size} px crops on a {model.grid_size}x{model.grid_size} grid",
            "data": train.data.dataset, "teacher": f"{train.teacher.kind} ({train.teacher.name or 'bundled'})",
            "budget per arm and seed": f"{train.loop.max_steps} steps x {train.optim.batch_size} images = "
            f"{train.loop.max_steps * train.optim.batch_size} images seen",
            "recipe": f"{model.prediction} prediction, t {train.step.t_sampling}"
            + (f" (mean {train.step.t_mean}, std {train.step.t_std})" if train.step.t_sampling == "logit_normal" else "")
            + f", message gates start at {train.init.message_gate}, message vectors std {train.init.message_embed_std}",
            "optimiser": f"lr {train.optim.lr}, warm-up {train.optim.warmup_steps}, EMA {train.optim.ema_decay}",
            "evaluation": f"recon/align on {config.eval.num_images} val images, probes {config.eval.num_train} train / "
            f"{config.eval.num_test} test images, crop curves on {config.eval.curves.num_images} images; "
            f"decoding {config.eval.steps} Euler steps, guidance {config.eval.cfg}",
            "seeds": ", ".join(map(str, config.seeds)),
            **({"start": _start_text(config)} if config.start is not None else {})}


def _start_text(config: ExperimentConfig) -> str:
    start = config.start
    train = config.start_config(config.start_seed(config.seeds[0]))
    shared = f"one start (seed {start.seed}) for every seed" if start.seed is not None else "one start per seed"
    return (f"{start.description + ': ' if start.description else ''}{train.loop.max_steps} steps x "
            f"{train.optim.batch_size} images ({_overrides(start.overrides)}); {shared}; every arm continues "
            "from it (init.weights: its transformer; heads, optimiser and step count start fresh)")


# ---------------------------------------------------------------------- markdown
def write_experiment_report(config: ExperimentConfig, out: Path, command: list[str], device: str,
                            session_seconds: float) -> dict:
    """Write results.json, results.md and the plots into ``out``; returns the results."""
    out = Path(out)
    results = build_results(config, out, command, device, session_seconds)
    plots = write_plots(config, results, out)
    write_results(out, results, render_markdown(config, results, plots))
    return results


def render_markdown(config: ExperimentConfig, results: dict, plots: list[str]) -> str:
    sections = (_status_lines(results), _gate_lines(config, results), _start_lines(config, results),
                _arm_lines(config), _claim_lines(results), _per_arm_lines(config, results), _control_lines(results),
                _curve_lines(results), ["## Plots", "", *[f"![{Path(p).stem}]({p})" for p in plots], ""] if plots else [],
                _setup_and_unit_lines(results))
    return "\n".join(line for section in sections for line in section)


def _status_lines(results: dict) -> list[str]:
    status = "complete" if results["complete"] else \
        f"PARTIAL: {results['units_done']} of {results['units_total']} (arm, seed) units finished"
    lines = [f"# Experiment: {results['name']}", "", f"Status: **{status}**. Cells: mean ± 95 % interval over seeds "
             "(Student t), n = seeds. Differences are paired by seed.", ""]
    if results["collapsed"]:
        lines += [f"**Warning: collapsed messages** in {', '.join(results['collapsed'])}: every image got the same "
                  "message (each position held one token id over all images), so these models' alignment and probe "
                  "scores are chance by construction and say nothing about the claims.", ""]
    if len(results["code_versions"]) > 1:
        lines += [f"**Warning**: units were trained by different code versions ({', '.join(results['code_versions'])}); "
                  "see the Units table.", ""]
    return lines


def _gate_lines(config: ExperimentConfig, results: dict) -> list[str]:
    if config.eval.gate is None:
        return []
    gate = config.eval.gate
    failed = [r["unit"] for r in results["gate"] if r["passed"] is False]
    return ["## Working-tokenizer gate", "",
            f"A unit is compared only if its `{gate.policy}` reconstruction beats the same reconstruction "
            f"scored against another image by at least {gate.min_gain_db} dB. "
            + (f"**Failed, left out of every table and claim below: {', '.join(failed)}.**" if failed
               else "Every measured unit passed."), "",
            markdown_table(results["gate"], ["unit", "gain_db", "passed"]), ""]


def _start_lines(config: ExperimentConfig, results: dict) -> list[str]:
    if config.start is None:
        return []
    return ["## Start", "", f"Every arm continues from a start model: {results['setup']['start']}. "
            "Its held-out global-crop score (`psnr_global`, `psnr_global_gain`: its training's last "
            "`val.jsonl` point) is in the Units table.", ""]


def _arm_lines(config: ExperimentConfig) -> list[str]:
    return ["## Arms", "", markdown_table([{"arm": a, "training": arm.description, "overrides": _overrides(arm.overrides)}
                                          for a, arm in config.arms.items()], ["arm", "training", "overrides"]), ""]


def _claim_lines(results: dict) -> list[str]:
    if not results["claims"]:
        return []
    return ["## Claims", "", markdown_table([{
        "claim": c["text"], "paper": c["paper"], "compared": c["compared"], "metric": c["metric"],
        "difference": cell(c["difference"]), "verdict": c["verdict"]} for c in results["claims"]],
        ["claim", "paper", "compared", "metric", "difference", "verdict"]), ""]


def _per_arm_lines(config: ExperimentConfig, results: dict) -> list[str]:
    arms = list(config.arms)
    reference = arms[0]
    header = ["metric", *arms, *[f"{a} − {reference}" for a in arms[1:]], "chance", "ceiling"]
    rows = [{"metric": r["label"] + ("" if r["higher_is_better"] else " (lower is better)") + _left_out_note(r),
             **{a: cell(r["arms"][a]) for a in arms},
             **{f"{a} − {reference}": cell(r["differences"][a]) for a in arms[1:]},
             "chance": cell(r["floor"]) if r["floor"] else "–",
             "ceiling": cell(r.get("ceiling")) if r.get("ceiling") else "–"} for r in results["arm_table"]]
    return ["## Results per arm", "", markdown_table(rows, header) if rows else "nothing evaluated yet", "",
            "`[policy]`: the crop policy at test time — " + "; ".join(
                f"`{n}`: {_policy_text(p)}" for n, p in config.eval.policies.items()) +
            ". Probes read the global crop only (the paper's protocol). Chance: random attention maps "
            "(alignment) or always the most frequent label(s) (probes). Ceiling: the object masks "
            "themselves as attention maps, the best any token can score (alignment), or the same probe "
            "reading the true scene written as tokens (probes; see their controls below). \"Maps cut "
            f"at the mask's area\": each map keeps as many pixels as the object has, instead of the top "
            f"{min(DEFAULT_QS):g}–{max(DEFAULT_QS):g} % (ceiling 1 on any data).", ""]


def _left_out_note(row: dict) -> str:
    seeds = row.get("left_out_seeds") or []
    return f" (without seed {', '.join(map(str, seeds))}: its probe failed the controls)" if seeds else ""


def _control_lines(results: dict) -> list[str]:
    if not results.get("probe_controls"):
        return []
    return ["## Probe controls", "", "Each probe also read two kinds of control messages of the same length "
            "(`comit.metrics.probe_controls`): the true scene written as tokens (`scene`: every object's colour, "
            "shape, size and cell, in random slots) and random tokens (`random`). A model's probe score means "
            "something only where the probe reads the scene (`probe_reads`: at least halfway from the band's "
            "top to 1) and the random messages stay at chance (`random_at_chance`: their 95 % interval meets the band "
            "of a probe that reads nothing, `chance_low`–`chance_high`: from the lower of guessing uniformly "
            "and guessing the training prior up to the test's majority). Mean over the units that "
            "measured them; `failed_seeds`: the probe seeds whose controls failed on the task, left out of "
            "that task's rows in the tables above and of its claims (the controls read no model, so a "
            "failure is the probe's, at that seed).", "",
            markdown_table([{**{k: fmt(v, 3) if isinstance(v, float) else v for k, v in row.items()},
                             "failed_seeds": ", ".join(map(str, row.get("failed_seeds", []))) or "none"}
                            for row in results["probe_controls"]],
                           ["task", "test", "primary", "units", "chance_low", "chance_high", "scene", "random",
                            "probe_reads", "random_at_chance", "failed_seeds"]), ""]


def _curve_lines(results: dict) -> list[str]:
    if not results["curves"]:
        return []
    metrics = list(_curve_metrics(results["curves"]))
    curve_rows = [{"arm": r["arm"], "policy": r["policy"], "crops": r["num_crops"],
                   **{m: _curve_cell(r, m) for m in metrics}} for r in results["curves"]]
    return ["## Test-time crop curves", "", markdown_table(curve_rows, ["arm", "policy", "crops", *metrics]), "",
            "Each image is tokenized one crop at a time; at each count the message is scored as above "
            "(probes trained once on global-crop messages, tested on every point).", ""]


def _setup_and_unit_lines(results: dict) -> list[str]:
    return ["## Setup", "", key_values(results["setup"]), "", "## Units", "",
            markdown_table(results["units"], ["arm", "seed", "trained", "evaluated", "train_s", "eval_s", "step",
                                              "loss", *_logged_terms(results["units"]), *_start_scores(results["units"]),
                                              "resumed_from", "code", "precision", "machine", "finished"]), "",
            f"Compute spent on the finished parts: {results['compute_s'] / 60:.1f} min (training + evaluation, "
            "summed over units and sessions).", "",
            "## Commands", "", "The whole experiment (resumable: rerun it to continue):", "", "```bash",
            results["run"]["experiment_command"], "```", "", "Each unit's training on its own:", "", "```bash",
            *results["train_commands"], "```", "", "## Run", "",
            key_values({k: v for k, v in results["run"].items() if k not in ("command", "experiment_command")},
                       "this session"), ""]


def _logged_terms(unit_rows: list[dict]) -> list[str]:
    """The loss terms (``LOSS_TERMS``, in their order) that some unit's training logged."""
    return [term for term in LOSS_TERMS if any(term in row for row in unit_rows)]


def _start_scores(unit_rows: list[dict]) -> list[str]:
    return [key for key in _START_SCORES if any(key in row for row in unit_rows)]


def _overrides(overrides: dict) -> str:
    from .config import flatten

    return ", ".join(f"{k}={v}" for k, v in flatten(overrides).items()) or "(none)"


def _policy_text(policy) -> str:
    crops = "all crops" if policy.num_crops is None else f"{policy.num_crops} crop(s)"
    return f"{policy.order}, {crops}, {'global crop first' if policy.global_crop else 'local crops only'}"


def _curve_metrics(rows: list[dict]) -> list[str]:
    keys = dict.fromkeys(k for r in rows for k in r if k not in ("arm", "policy", "num_crops", "n")
                         and not k.endswith("_ci95"))
    return list(keys)


def _curve_cell(row: dict, metric: str) -> str:
    if row.get(metric) is None:
        return "–"
    width = row.get(f"{metric}_ci95")
    return fmt(row[metric], 3) if width is None else f"{row[metric]:.3f} ± {width:.3f}"


# ---------------------------------------------------------------------- plots
def tokens_figure(config: ExperimentConfig, out: Path):
    """The tokens-over-objects figure: each arm's best token on the same val images, from the lowest
    seed that arm has evaluated (drawn from the stored maps: no model needed); None before any."""
    from ..data import build_dataset
    from ..eval.run_align import tokens_over_objects
    from ..eval.run_suite import read_result

    columns = {}
    for arm in config.arms:
        for seed in sorted(config.seeds):
            folder = out / "evals" / arm / f"seed-{seed}" / "tokens"
            if (folder / "results.json").is_file():
                columns[f"arm {arm}, seed {seed}"] = read_result(folder, "tokens")
                break
    if not columns:
        return None
    size = int(next(iter(columns.values())).settings["image_size"])
    return tokens_over_objects(build_dataset(config.eval.data, size, split="val"), columns)


def write_plots(config: ExperimentConfig, results: dict, out: Path) -> list[str]:
    """Bars per arm (alignment, probes; PSNR) and one crop-curve plot per metric; returns file names."""
    from ..plots import plot_bars, plot_curves

    written = []
    bars, psnr = [], []
    for row in results["arm_table"]:
        key = row["metric"].split("/", 1)[1]
        for arm, estimate in row["arms"].items():
            if estimate is None:
                continue
            entry = {"metric": row["label"].replace("token–object ", ""), "arm": arm, "value": estimate["mean"],
                     "ci95": estimate["ci95"]}
            if key in _BAR_METRICS:
                bars.append(entry)
            elif key == "psnr":
                psnr.append(entry)
    for name, table, ylabel in (("arms_alignment_probes.png", bars, "score"), ("arms_psnr.png", psnr, "PSNR (dB)")):
        if table:
            plot_bars(table, x="metric", y="value", hue="arm", yerr="ci95", path=out / name, ylabel=ylabel,
                      title=f"{config.name}: mean ± 95 % CI over seeds")
            written.append(name)
    figure = tokens_figure(config, out)
    if figure is not None:
        figure.save(out / "tokens_over_objects.png")
        written.append("tokens_over_objects.png")
    for metric in _curve_metrics(results["curves"]):
        table = [{**r, "line": f"{r['arm']} {r['policy']}"} for r in results["curves"] if r.get(metric) is not None]
        if table:
            name = f"crops_{metric}.png"
            plot_curves(table, x="num_crops", y=metric, hue="line", band=f"{metric}_ci95", path=out / name,
                        xlabel="crops observed at test time", title=f"{metric} (mean ± 95 % CI)")
            written.append(name)
    return written
