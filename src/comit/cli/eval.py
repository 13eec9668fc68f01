"""``comit eval ...``: thin typer wrappers over the evaluation functions.

Each command loads the model and data, calls one ``evaluate_*`` function (the same ones Python
callers use), and writes ``OUT/results.json``, ``OUT/results.md`` and PNG plots.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..model.policy_names import ADAPTIVE, POLICY_NAMES, RASTER_SCAN
from .options import (BatchOption as BatchOpt, CfgOption as CfgOpt, DeviceOption as DeviceOpt,
                      GlobalCropOption as GlobalOpt, ModelOption as ModelOpt, NumCropsOption as NumCropsOpt,
                      OrderOption as OrderOpt, SolverOption as SolverOpt, StepsOption as StepsOpt)
from .support import friendly_errors, load_model, parse_order, resolved_num_crops

if TYPE_CHECKING:
    from ..eval.results import EvalResult

eval_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                       help="Measure reconstruction, probes, token-object alignment and crop-budget curves.")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")


DataOpt = Annotated[str, typer.Option("--data", "-d", help="'shapes', 'shapes:key=value,...' or an image folder.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for results.json, results.md and plots.")]
SplitOpt = Annotated[Optional[str], typer.Option("--split", help="Split to evaluate: train, val (or validation), test, any split the data has (folders: a sub-folder). Default: val where the data has one, else all of it.")]
# Defaults sized so that `comit eval all` on the bundled model finishes in about 6 minutes on a
# 2-core CPU (docs/evaluation.md); 0 asks for every image, as a paper-scale evaluation wants.
DEFAULT_EVAL_IMAGES = 100
DEFAULT_PROBE_TRAIN = 1000
# `eval probe` alone: enough images that every positive control reads and the intervals are a few
# points wide, in under 8 minutes alone on 2 CPU cores (docs/evaluation.md, "Probes that can read").
PROBE_COMMAND_TRAIN, PROBE_COMMAND_TEST = 2000, 1000
# ProbeSettings' schedule (kept equal by tests/test_eval_commands.py; run_probe imports torch, this module must not).
PROBE_EPOCHS, PROBE_PATIENCE = 60, 10
DEFAULT_CROP_IMAGES = 16
DEFAULT_CROP_COUNTS = "1,3,9"
NumImagesOpt = Annotated[int, typer.Option(
    "--num-images", "-n", help="Evaluate the first N images (0: all).")]
CropImagesOpt = Annotated[int, typer.Option(
    "--num-images", "-n", help="Images for the curves (0: all).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random choice (per image).")]
FidOpt = Annotated[str, typer.Option("--fid-features", help="inception | none | shapes-teacher[:DIR] | hf:HUB_ID | "
                                                         "python:package.module:name (see docs/evaluation.md).")]
MasksOpt = Annotated[Optional[Path], typer.Option("--masks", help="Folder of ground-truth masks for --data FOLDER.")]
LayerOpt = Annotated[int, typer.Option("--layer", help="Transformer block whose attention is read (negative: from the end).")]
TimesOpt = Annotated[str, typer.Option("--times", help="Flow times the maps are averaged over, e.g. 0.25,0.5,0.75.")]
HeadsOpt = Annotated[str, typer.Option("--heads", help="mean | max | a head index.")]
DirectionOpt = Annotated[str, typer.Option("--direction", help="token_to_patch | patch_to_token.")]
QOpt = Annotated[str, typer.Option("--q", help="Top-Q percentages the score is averaged over.")]
LabelsOpt = Annotated[Optional[Path], typer.Option("--labels", help="CSV with columns image,label[,split] (probe on any images).")]
TasksOpt = Annotated[Optional[str], typer.Option("--tasks", help="semantic,compositional,relational (shapes) or classes.")]
NumTrainOpt = Annotated[int, typer.Option(
    "--num-train", help="Probe-training images (0: all).")]
ProbeInputOpt = Annotated[str, typer.Option("--probe-input", help="codes (FSQ codes) | ids (learned embedding).")]
ControlsOpt = Annotated[bool, typer.Option("--controls/--no-controls",
                                           help="Also probe the positive (true scene) and negative (random) control "
                                                "messages, shapes data only: a score means something only where "
                                                "both behave.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Most probe epochs (early stopping may end sooner).")]
PatienceOpt = Annotated[int, typer.Option("--patience", help="Epochs without validation gain before stopping.")]
HoldoutOpt = Annotated[float, typer.Option("--holdout-fraction", help="Share of concept pairs held out (compositional).")]
OrdersOpt = Annotated[str, typer.Option("--orders", help="Orders to compare, comma-separated.")]
GlobalModesOpt = Annotated[str, typer.Option("--global", help="both | on | off: policies with / without the global crop.")]
CountsOpt = Annotated[str, typer.Option(
    "--crop-counts", help="Crop counts to measure, e.g. 1,2,3,5,9 ('all': every count).")]
MetricsOpt = Annotated[Optional[str], typer.Option("--metrics", help="recon,align,probe (default: what the data allows).")]


def _eval_dataset(data: str, image_size: int, split: str | None, num_images: int | None, masks=None):
    """The split asked for; without --split, val where the data has one, else all of it, unsaid."""
    import warnings

    from ..data.splits import SplitWarning
    from ..eval.protocol import load_dataset

    with warnings.catch_warnings():
        if split is None:
            warnings.simplefilter("ignore", SplitWarning)
        return load_dataset(data, image_size, split or "val", num_images, masks=masks)


def _all_if_zero(count: int) -> int | None:
    """The loaders' "every item" is None; on the command line it is 0."""
    return None if count == 0 else count


def _model(name: str, device: str):
    return load_model(name, device)


def _settings(order: str, num_crops, global_crop, steps, cfg, solver, seed, batch_size):
    from ..eval.protocol import EvalSettings

    order_value = parse_order(order)
    return EvalSettings(order=order_value, num_crops=resolved_num_crops(order_value, num_crops), global_crop=global_crop, steps=steps, cfg=cfg,
                        solver=solver, seed=seed, batch_size=batch_size)


def _align_settings(layer, times, heads, direction, q):
    from ..eval.protocol import parse_numbers
    from ..eval.run_align import AlignSettings

    return AlignSettings(layer=layer, times=parse_numbers(times, float, "--times"),
                         heads=int(heads) if heads.lstrip("-").isdigit() else heads, direction=direction,
                         qs=parse_numbers(q, float, "--q"))


def _probe_settings(tasks, probe_input, epochs, patience, holdout, seed, controls=False):
    from ..eval.run_probe import ProbeSettings

    names = tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks else None
    return ProbeSettings(tasks=names, input=probe_input, epochs=epochs, patience=patience,
                         holdout_fraction=holdout, seed=seed, controls=controls)


def _finish(ctx: typer.Context, results: EvalResult, model: str, data: str, device, started: float) -> EvalResult:
    from ..eval.report import provenance

    return results.finished(model, data, provenance(device, time.perf_counter() - started, _command_line(ctx)))


def _command_line(ctx: typer.Context) -> list[str]:
    """The running command with every option spelled out (defaults included): rerunning it
    repeats the evaluation even if a default changes later."""
    words = ["comit", "eval", ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or param.param_type_name != "option":
            continue
        if param.is_flag:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            words += [param.opts[0], str(value)]
    return words


def _say(out: Path, summary: str) -> None:
    typer.echo(summary)
    typer.echo(f"wrote {out / 'results.json'} and {out / 'results.md'}")


# ---------------------------------------------------------------------- commands
@eval_app.command()
@friendly_errors
def recon(ctx: typer.Context, out: OutOpt, model: ModelOpt = "bundled", data: DataOpt = "shapes", split: SplitOpt = None,
          num_images: NumImagesOpt = DEFAULT_EVAL_IMAGES, order: OrderOpt = ADAPTIVE, num_crops: NumCropsOpt = None,
          global_crop: GlobalOpt = False, steps: StepsOpt = 10, cfg: CfgOpt = 7.5, solver: SolverOpt = "euler",
          fid_features: FidOpt = "inception", seed: SeedOpt = 0, batch_size: BatchOpt = 16,
          device: DeviceOpt = "auto"):
    """PSNR, SSIM, rFID and codebook usage of reconstructions."""
    from ..eval.run_recon import evaluate_reconstruction, reconstruction_examples, write_recon_report

    started = time.perf_counter()
    net = _model(model, device)
    settings = _settings(order, num_crops, global_crop, steps, cfg, solver, seed, batch_size)
    dataset = _eval_dataset(data, net.config.image_size, split, _all_if_zero(num_images))
    results = _finish(ctx, evaluate_reconstruction(net, dataset, settings, fid_features), model, data, net.device, started)
    write_recon_report(out, results, reconstruction_examples(net, dataset, settings))
    _say(out, _recon_summary(results.metrics))
    return results


def _recon_summary(m: dict) -> str:
    rfid = "n/a" if m["rfid"] is None else f"{m['rfid']:.3f}"
    return (f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim'] if m['ssim'] is None else round(m['ssim'], 4)}, "
            f"rFID {rfid}, perplexity {m['codebook_perplexity']:.1f} over {m['num_images']} images")


@eval_app.command()
@friendly_errors
def align(ctx: typer.Context, out: OutOpt, model: ModelOpt = "bundled", data: DataOpt = "shapes", masks: MasksOpt = None,
          split: SplitOpt = None, num_images: NumImagesOpt = DEFAULT_EVAL_IMAGES, order: OrderOpt = ADAPTIVE,
          num_crops: NumCropsOpt = None, global_crop: GlobalOpt = False, layer: LayerOpt = -1,
          times: TimesOpt = "0.25,0.5,0.75", heads: HeadsOpt = "mean", direction: DirectionOpt = "token_to_patch",
          q: QOpt = "10,20,30,40,50", seed: SeedOpt = 0, batch_size: BatchOpt = 16, device: DeviceOpt = "auto"):
    """Token-object alignment: best-token IoU of top-Q attention maps with object masks."""
    from ..eval.run_align import evaluate_alignment, write_align_report

    started = time.perf_counter()
    net = _model(model, device)
    settings = _settings(order, num_crops, global_crop, 10, 7.5, "euler", seed, batch_size)
    dataset = _eval_dataset(data, net.config.image_size, split, _all_if_zero(num_images), masks=masks)
    align_settings = _align_settings(layer, times, heads, direction, q)
    results = _finish(ctx, evaluate_alignment(net, dataset, settings, align_settings), model, data, net.device, started)
    write_align_report(out, results)
    _say(out, _align_summary(results.metrics))
    return results


def _align_summary(m: dict) -> str:
    return (f"mIoU per image {m['miou_image']:.4f} (random {m['random_miou_image']:.4f}, masks "
            f"{m['oracle_miou_image']:.4f}), per object {m['miou_object']:.4f} (random {m['random_miou_object']:.4f}, "
            f"masks {m['oracle_miou_object']:.4f}) over {m['num_images']} images")


@eval_app.command()
@friendly_errors
def probe(ctx: typer.Context, out: OutOpt, model: ModelOpt = "bundled", data: DataOpt = "shapes", labels: LabelsOpt = None,
          tasks: TasksOpt = None, num_train: NumTrainOpt = PROBE_COMMAND_TRAIN,
          num_images: NumImagesOpt = PROBE_COMMAND_TEST, order: OrderOpt = RASTER_SCAN, num_crops: Annotated[Optional[int], typer.Option(
              "--num-crops", help="Crops to observe (default 1: with --global-crop, the global crop only).")] = 1,
          global_crop: Annotated[bool, typer.Option("--global-crop/--no-global-crop",
                                                    help="Observe the whole image first (the paper probes it alone).")] = True,
          probe_input: ProbeInputOpt = "codes", epochs: EpochsOpt = PROBE_EPOCHS, patience: PatienceOpt = PROBE_PATIENCE,
          controls: ControlsOpt = True, holdout_fraction: HoldoutOpt = 0.2, seed: SeedOpt = 0, batch_size: BatchOpt = 16,
          device: DeviceOpt = "auto"):
    """Attention probes on frozen messages: semantic, compositional, relational (shapes) or classes, each
    beside its positive and negative controls (shapes), with 95 % intervals; one log line per probe epoch."""
    from ..eval.run_probe import evaluate_probes, probe_datasets, write_probe_report

    started = time.perf_counter()
    net = _model(model, device)
    settings = _settings(order, num_crops, global_crop, 10, 7.5, "euler", seed, batch_size)
    train, test, classes = probe_datasets(data, net.config.image_size, labels, _all_if_zero(num_train),
                                          _all_if_zero(num_images), seed=seed)
    probe_settings = _probe_settings(tasks, probe_input, epochs, patience, holdout_fraction, seed, controls)
    results = _finish(ctx, evaluate_probes(net, train, test, settings, probe_settings, classes), model, data,
                      net.device, started)
    write_probe_report(out, results)
    scores = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in results.metrics.items())
    _say(out, scores)
    return results


@eval_app.command()
@friendly_errors
def crops(ctx: typer.Context, out: OutOpt, model: ModelOpt = "bundled", data: DataOpt = "shapes", masks: MasksOpt = None,
          labels: LabelsOpt = None, split: SplitOpt = None, num_images: CropImagesOpt = DEFAULT_CROP_IMAGES,
          num_train: NumTrainOpt = DEFAULT_PROBE_TRAIN, orders: OrdersOpt = ",".join(POLICY_NAMES),
          global_modes: GlobalModesOpt = "both", crop_counts: CountsOpt = DEFAULT_CROP_COUNTS,
          metrics: MetricsOpt = None,
          steps: StepsOpt = 10, cfg: CfgOpt = 7.5, solver: SolverOpt = "euler", fid_features: FidOpt = "none",
          layer: LayerOpt = -1, times: TimesOpt = "0.25,0.5,0.75", heads: HeadsOpt = "mean",
          direction: DirectionOpt = "token_to_patch", q: QOpt = "10,20,30,40,50", tasks: TasksOpt = None,
          probe_input: ProbeInputOpt = "codes", epochs: EpochsOpt = PROBE_EPOCHS, patience: PatienceOpt = PROBE_PATIENCE,
          holdout_fraction: HoldoutOpt = 0.2, seed: SeedOpt = 0, batch_size: BatchOpt = 16, device: DeviceOpt = "auto"):
    """Every metric against the number of crops, per order, with and without the global crop."""
    from ..eval.protocol import parse_numbers
    from ..eval.run_crops import CurveSettings, evaluate_crop_curves, write_crops_report
    from ..eval.run_probe import probe_datasets

    started = time.perf_counter()
    net = _model(model, device)
    settings = _settings(ADAPTIVE, None, False, steps, cfg, solver, seed, batch_size)
    families = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    curves = CurveSettings(orders=[o.strip() for o in orders.split(",") if o.strip()],
                           global_crop=_global_modes(global_modes),
                           crop_counts=None if crop_counts.strip() == "all" else
                           parse_numbers(crop_counts, int, "--crop-counts"),
                           metrics=families)
    wants_probe = "probe" in families if families else (labels is not None or _is_shapes(data)) and masks is None
    if wants_probe:  # the probes' own test images, so probe-training and test images never overlap
        probe_train, dataset, _ = probe_datasets(data, net.config.image_size, labels, _all_if_zero(num_train),
                                                 _all_if_zero(num_images), seed=seed)
    else:
        probe_train, dataset = None, _eval_dataset(data, net.config.image_size, split, _all_if_zero(num_images), masks=masks)
    results = evaluate_crop_curves(net, dataset, settings, curves, fid_features,
                                   _align_settings(layer, times, heads, direction, q), probe_train,
                                   _probe_settings(tasks, probe_input, epochs, patience, holdout_fraction, seed))
    results = _finish(ctx, results, model, data, net.device, started)
    write_crops_report(out, results)
    _say(out, f"{len(results.rows)} points ({', '.join(results.metrics)})")
    return results


def _global_modes(text: str) -> tuple[bool, ...]:
    modes = {"both": (False, True), "on": (True,), "off": (False,)}
    if text not in modes:
        raise ValueError(f"--global must be both, on or off, got {text!r}")
    return modes[text]


def _is_shapes(data: str) -> bool:
    return data.strip() == "shapes" or data.strip().startswith("shapes:")


@eval_app.command("all")
@friendly_errors
def all_(ctx: typer.Context, out: OutOpt, model: ModelOpt = "bundled", data: DataOpt = "shapes",
         masks: MasksOpt = None, labels: LabelsOpt = None, num_images: NumImagesOpt = DEFAULT_EVAL_IMAGES,
         num_train: NumTrainOpt = DEFAULT_PROBE_TRAIN, order: OrderOpt = ADAPTIVE, num_crops: NumCropsOpt = None,
         global_crop: GlobalOpt = False, steps: StepsOpt = 10, cfg: CfgOpt = 7.5, solver: SolverOpt = "euler",
         fid_features: FidOpt = "inception", crop_counts: CountsOpt = DEFAULT_CROP_COUNTS,
         crop_images: Annotated[int, typer.Option(
             "--crop-images",
             help="Images for the crop curves, the costliest part (0: all).")]
         = DEFAULT_CROP_IMAGES,
         epochs: EpochsOpt = PROBE_EPOCHS, seed: SeedOpt = 0, batch_size: BatchOpt = 16, device: DeviceOpt = "auto"):
    """The whole suite: recon, align, probe and crops into OUT/<part>/, headline numbers in OUT/results.md.

    With the default sizes, about 6 minutes for the bundled model on a 2-core CPU; `-n 0
    --num-train 0 --crop-images 0 --crop-counts all` evaluates everything (hours on a CPU).
    """
    from ..eval.run_suite import write_suite_report

    started = time.perf_counter()
    common = dict(model=model, data=data, num_images=num_images, seed=seed, batch_size=batch_size, device=device)
    policy = dict(order=order, num_crops=num_crops, global_crop=global_crop)
    decoding = dict(steps=steps, cfg=cfg, solver=solver)
    runs = {"recon": lambda o: recon(ctx, o, **common, **policy, **decoding, fid_features=fid_features)}
    if masks is not None or _is_shapes(data):  # otherwise there is no ground truth to align with
        runs["align"] = lambda o: align(ctx, o, masks=masks, **common, **policy)
    if labels is not None or _is_shapes(data) or _has_class_folders(data):
        runs["probe"] = lambda o: probe(ctx, o, labels=labels, num_train=num_train, epochs=epochs, **common)
    runs["crops"] = lambda o: crops(ctx, o, masks=masks, labels=labels, num_train=num_train, crop_counts=crop_counts,
                                    epochs=epochs, **{**common, "num_images": crop_images}, **decoding)
    # Each part returns the result it wrote: the suite reports those numbers, not a re-read of the files.
    parts = {name: run(out / name) for name, run in runs.items()}
    results = write_suite_report(out, parts, model, data, time.perf_counter() - started, _command_line(ctx))
    typer.echo(f"suite done in {results.run['wall_time_s']:.0f} s: {out / 'results.md'}")


def _has_class_folders(data: str) -> bool:
    root = Path(data)
    return root.is_dir() and any(child.is_dir() and not child.name.startswith(".") for child in root.iterdir())
