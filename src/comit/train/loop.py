"""The training loop: optimiser, schedule, EMA, checkpoints, exact resume, DDP, logging.

``train(config, out)`` runs one process's part of a run. Under ``torchrun`` every process runs
it; they form a DDP group (NCCL on GPUs, gloo on CPU) and only rank 0 writes files.

Output folder::

    out/config.yaml          the resolved config (a resumed run reads it back)
    out/metrics.jsonl        one JSON object per logged step: step, loss, each term, lr, grad_norm, images/s
    out/checkpoints/step-*/  training state (see checkpoint.py); the newest ``keep_last`` are kept
    out/samples/step-*.png   reconstructions of fixed val images by the EMA model (rows: image, reconstruction)
    out/model/               the final EMA model, ``COMiT.from_pretrained(out / "model")``
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..data import build_dataset, save_image
from ..devices import describe_device, resolve_device, resolve_precision
from ..progress import progress
from ..model.autoencoders import SDVAE, Autoencoder
from ..io import atomic_write
from ..model.checkpoints import PROVENANCE_NAME
from ..model.comit import COMiT
from ..model.fit import PoorFitWarning
from ..model.conv_autoencoder import ConvAutoencoder
from ..model.policies import RasterScan
from .batches import StepBatches, step_loader
from .checkpoint import ResumeError, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, dump_config, load_config
from .run_log import VAL_FILE, RunLog, append_line
from .initialization import initialize_message_stream, start_from_weights
from .step import TrainingStep
from ..teachers import build_teacher
from .latent_cache import CachedLatents, with_cached_latents
from .validation import validate

CONFIG_FILE = "config.yaml"
BELT = "conveyor."  # the step module's conveyor buffers (one belt per process)


@dataclass
class Process:
    """Where this process stands in a (possibly single-process) run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# ---------------------------------------------------------------------- set-up
def init_process(device: str) -> Process:
    """Join the torchrun group when launched by torchrun (WORLD_SIZE > 1), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = resolve_device("auto").type
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"loop.device={device} but no CUDA device is available; use device=cpu")
        device = f"cuda:{local_rank}" if world_size > 1 or device == "cuda" else device
        torch.cuda.set_device(torch.device(device))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Process(rank=rank, world_size=world_size, device=torch.device(device))


def step_seed(seed: int, step: int, rank: int) -> int:
    """The random state of a step: a function of (seed, step, rank), so resuming needs only the step."""
    return (seed * 1_000_003 + step * 8_191 + rank * 131) % (2 ** 63)


class TrainingDiverged(ValueError):
    """The loss or the gradient became NaN or Inf; the step that made it was not applied."""


def learning_rate(step: int, peak: float, warmup: int, schedule: str = "inverse_sqrt", total: int = 1,
                  decay_steps: int = 0) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then ``schedule``: ``inverse_sqrt``
    (peak * sqrt(warmup / step), the paper's), ``constant``, ``cosine`` (to 0 at ``total``), or
    ``wsd`` (constant, then linear to 0 over the last ``decay_steps`` before ``total``)."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    if schedule == "wsd":
        return peak * min(1.0, max(0.0, (total - step) / max(1, decay_steps)))
    if schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * peak * (1 + math.cos(math.pi * progress))
    return peak * math.sqrt(max(warmup, 1) / max(step + 1, 1))


def ema_decay(step: int, decay: float) -> float:
    """The configured decay, ramped up early so short runs' EMA is not stuck at the initialisation."""
    return min(decay, (1 + step) / (10 + step))


def build_model(config: TrainConfig) -> COMiT:
    """A fresh model with the config's trained autoencoder (:func:`training_autoencoder`)."""
    autoencoder = training_autoencoder(config)
    model = COMiT(config.model, autoencoder=autoencoder)
    if config.init.weights is not None:
        start_from_weights(model.predictor, config.model, config.init.weights)
    else:
        initialize_message_stream(model.predictor, config.init)
    return model


def training_autoencoder(config: TrainConfig) -> Autoencoder | None:
    """The SD-VAE with its pretrained weights from the hub (or the local cache), the conv
    autoencoder from ``model.autoencoder.path``; None for the pixel space (no weights)."""
    autoencoder = config.model.autoencoder
    if autoencoder.kind == "sd-vae":
        return SDVAE.from_hub(autoencoder.model_type, hub_id=autoencoder.hub_id,
                              sample_posterior=autoencoder.sample_posterior)
    if autoencoder.kind == "conv":
        if autoencoder.path is None:
            raise ConfigError("model.autoencoder.kind=conv needs path: 'bundled' or a folder written by "
                              "comit train-autoencoder (its trained weights)")
        conv = ConvAutoencoder.from_pretrained(autoencoder.path)
        if conv.config != autoencoder.conv:
            raise ConfigError(f"model.autoencoder.conv does not describe the autoencoder in "
                              f"{autoencoder.path}; drop model.autoencoder.conv to read it from there")
        return conv
    if autoencoder.kind == "custom":
        raise ConfigError("model.autoencoder.kind=custom cannot be trained from a config; use pixel or sd-vae")
    return None


# ---------------------------------------------------------------------- the run
class Trainer:
    def __init__(self, config: TrainConfig, out: Path, resume: bool = False, progress: bool = True):
        self.config, self.out, self.progress = config, Path(out), progress
        self.process = init_process(config.loop.device)
        self.micro_batch = config.micro_batch(self.process.world_size)
        torch.manual_seed(config.loop.seed)  # identical initial weights on every process
        self.model = build_model(config).to(self.process.device)
        self.teacher = build_teacher(config.teacher.kind, config.teacher.name, config.teacher.image_size,
                                     config.teacher.dtype)
        if self.teacher is not None:
            self.teacher = self.teacher.to(self.process.device)
        teacher_dim = self.teacher.feature_dim if self.teacher is not None else None
        self.step_module = TrainingStep(self.model, config.step, teacher_dim, batch=self.micro_batch)
        self.step_module.to(self.process.device).train()
        self.ema = copy.deepcopy(self.model.predictor).requires_grad_(False).eval()
        self.trainable = [p for p in self.step_module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.optim.lr, betas=config.optim.betas,
                                           weight_decay=config.optim.weight_decay)
        if config.loop.compile:  # compile the forward only: parameter names stay those of the checkpoints
            self.model.predictor.forward = torch.compile(self.model.predictor.forward)
        self.forward = self.step_module
        if self.process.distributed:
            device_ids = [self.process.device.index] if self.process.device.type == "cuda" else None
            # broadcast_buffers off: the conveyor's buffers differ per process by design, and the
            # model's own buffers are constants.
            self.forward = nn.parallel.DistributedDataParallel(self.step_module, device_ids=device_ids,
                                                               broadcast_buffers=False)
        self.seconds_before = 0.0  # training time spent by the processes that wrote the checkpoint resumed from
        self.loop_started = time.perf_counter()
        self.start_step = self.restore() if resume else 0
        self.autocast = self.precision() == "bf16"
        self.val_images: torch.Tensor | None = None

    # -------------------------------------------------------------- state
    def restore(self) -> int:
        found = latest_checkpoint(self.out / "checkpoints")
        if found is None:
            raise ResumeError(f"nothing to resume in {self.out}: it holds no complete checkpoint")
        state = load_checkpoint(found)
        self.step_module.load_state_dict(self.own_belt(state.model, found))
        self.ema.load_state_dict(state.ema)
        self.optimizer.load_state_dict(state.optimizer)
        self.seconds_before = float(state.extra.get("train_seconds", 0.0))
        return state.step

    def train_seconds(self) -> float:
        """Wall time spent in the training loop since step 0 (each process's setup not counted), summed
        over the resumes whose checkpoints carry it (those written before it count from the resume)."""
        return self.seconds_before + time.perf_counter() - self.loop_started

    def checkpoint(self, step: int) -> None:
        weights = self.every_belt(self.step_module.state_dict())  # every process takes part
        if not self.process.is_main:
            return
        save_checkpoint(self.out / "checkpoints", step, weights, self.ema.state_dict(),
                        self.optimizer.state_dict(),
                        {"data_position": step * self.config.optim.batch_size,
                         "train_seconds": round(self.train_seconds(), 1),
                         "config": self.config.model_dump(mode="json")},
                        keep_last=self.config.loop.keep_last)

    def every_belt(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The conveyor's buffers (``step.conveyor``) stacked over processes [world, ...]: each
        process keeps its own belt of images and messages, and a resumed run needs all of them."""
        for name in [key for key in state if key.startswith(BELT)]:
            local = state[name].contiguous()
            if self.process.distributed:
                gathered = [torch.empty_like(local) for _ in range(self.process.world_size)]
                dist.all_gather(gathered, local)
                state[name] = torch.stack(gathered)
            else:
                state[name] = local[None]
        return state

    def own_belt(self, state: dict[str, torch.Tensor], found: Path) -> dict[str, torch.Tensor]:
        """This process's row of the stacked conveyor buffers (see ``every_belt``)."""
        for name in [key for key in state if key.startswith(BELT)]:
            if state[name].shape[0] != self.process.world_size:
                raise ResumeError(f"{found} was written by {state[name].shape[0]} processes, each with its own "
                                  f"conveyor; resume it with the same number (not {self.process.world_size})")
            state[name] = state[name][self.process.rank]
        return state

    def precision(self) -> str:
        return resolve_precision(self.config.loop.precision, self.process.device)

    # -------------------------------------------------------------- the loop
    def run(self) -> Path:
        cfg = self.config
        # The data is checked before the run folder is touched: a bad dataset leaves nothing behind.
        dataset = with_cached_latents(build_dataset(cfg.data.dataset, cfg.model.image_size, split="train",
                                                    **({"flip": True} if cfg.data.flip else {})), cfg)
        fresh = self.start_step == 0 and not self.out.exists()
        if self.process.is_main:
            self.prepare_output()
        try:
            return self.train_loop(dataset)
        except Exception:
            if fresh and self.process.is_main and latest_checkpoint(self.out / "checkpoints") is None:
                # Nothing to resume from (a broken image met before the first checkpoint): the folder
                # this run made goes, so the fixed re-run starts as this one did.
                shutil.rmtree(self.out, ignore_errors=True)
            raise

    def train_loop(self, dataset) -> Path:
        """Every step from ``start_step``, with logs, checkpoints and held-out evaluations; the final model."""
        cfg = self.config
        batches = StepBatches(len(dataset), cfg.optim.batch_size, cfg.optim.grad_accum, self.process.rank,
                              self.process.world_size, cfg.loop.seed, start_step=self.start_step)
        loader = iter(step_loader(dataset, batches, cfg.data.num_workers, self.process.device.type == "cuda"))
        logger = RunLog(self.out, self.start_step, cfg) if self.process.is_main else None
        bar = self.progress_bar()
        self.loop_started = window_start = time.perf_counter()
        window_images = 0
        for step in range(self.start_step, cfg.loop.max_steps):
            terms, grad_norm = self.train_step(step, loader)
            window_images += cfg.optim.batch_size
            if (step + 1) % cfg.loop.log_every == 0 or step + 1 == cfg.loop.max_steps:
                terms = self.average_over_processes(terms)
                speed = window_images / max(time.perf_counter() - window_start, 1e-9)
                record = {"step": step + 1, **terms, "lr": self.lr(step),
                          "grad_norm": grad_norm, "images_per_s": round(speed, 2),
                          "train_s": round(self.train_seconds(), 1)}
                if logger:
                    logger.write(record)
                if bar:
                    bar.set_postfix(loss=f"{terms['loss']:.4f}", img_s=f"{speed:.1f}")
                window_start, window_images = time.perf_counter(), 0
            if bar:
                bar.update(1)
            if (step + 1) % cfg.loop.checkpoint_every == 0 or step + 1 == cfg.loop.max_steps:
                self.checkpoint(step + 1)
            if cfg.loop.sample_every and (step + 1) % cfg.loop.sample_every == 0 and self.process.is_main:
                self.write_samples(step + 1, logger)
            if cfg.loop.eval_every and (step + 1) % cfg.loop.eval_every == 0 and self.process.is_main:
                self.write_validation(step + 1, bar, logger)
        if bar:
            bar.close()
        if logger:
            logger.close()
        self.check_in_sync()
        return self.save_final_model()

    def train_step(self, step: int, loader) -> tuple[dict[str, float], float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns this process's loss terms."""
        cfg = self.config
        torch.manual_seed(step_seed(cfg.loop.seed, step, self.process.rank))
        lr = self.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, float] = {}
        global_only = step < cfg.step.global_warmup_steps
        for micro in range(cfg.optim.grad_accum):
            batch = next(loader)
            images = batch["image"].to(self.process.device, non_blocking=True)
            latents = CachedLatents.from_batch(batch, self.process.device) if cfg.data.latent_cache else None
            teacher = self.teacher(images) if self.teacher is not None else None
            last = micro + 1 == cfg.optim.grad_accum
            sync = self.forward.no_sync() if self.process.distributed and not last else nullcontext()
            with sync, torch.autocast(self.process.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                result = self.forward(images, teacher, global_only=global_only, latents=latents)
                (result.loss / cfg.optim.grad_accum).backward()
            for name, value in {"loss": result.loss, **result.terms}.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / cfg.optim.grad_accum
        grad_norm = self.clip_gradients()
        if not (math.isfinite(totals["loss"]) and math.isfinite(grad_norm)):
            raise self.diverged(step, totals["loss"], grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.update_ema(step)
        return totals, grad_norm

    def diverged(self, step: int, loss: float, grad_norm: float) -> "TrainingDiverged":
        """Nothing was updated: the weights on disk and in memory are those of the last finite step."""
        last = latest_checkpoint(self.out / "checkpoints")
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        return TrainingDiverged(f"training diverged at step {step + 1} (loss {loss:.4g}, gradient norm "
                                f"{grad_norm:.4g}); the weights were not updated and {kept}: resume it with a "
                                "lower optim.lr or a grad_clip")

    def lr(self, step: int) -> float:
        optim = self.config.optim
        return learning_rate(step, optim.lr, optim.warmup_steps, optim.schedule, self.config.loop.max_steps,
                             optim.decay_steps)

    def clip_gradients(self) -> float:
        clip = self.config.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip if clip is not None else float("inf"))
        return float(norm)

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        decay = ema_decay(step, self.config.optim.ema_decay)
        for average, param in zip(self.ema.parameters(), self.model.predictor.parameters()):
            average.lerp_(param.detach(), 1 - decay)

    def average_over_processes(self, terms: dict[str, float]) -> dict[str, float]:
        if not self.process.distributed:
            return terms
        names = sorted(terms)
        values = torch.tensor([terms[name] for name in names], device=self.process.device)
        dist.all_reduce(values)
        return {name: float(value) / self.process.world_size for name, value in zip(names, values)}

    def check_in_sync(self) -> None:
        """DDP keeps replicas identical; verify it at the end (a cheap checksum per process)."""
        if not self.process.distributed:
            return
        checksum = torch.stack([p.detach().double().sum() for p in self.model.predictor.parameters()]).sum()
        gathered = [torch.zeros_like(checksum) for _ in range(self.process.world_size)]
        dist.all_gather(gathered, checksum)
        if any(float(value) != float(checksum) for value in gathered):
            raise RuntimeError(f"processes diverged: parameter checksums {[float(v) for v in gathered]}")
        if self.process.is_main:
            print(f"parameters identical on all {self.process.world_size} processes (checksum {float(checksum):.6f})",
                  flush=True)

    # -------------------------------------------------------------- output
    def prepare_output(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out / CONFIG_FILE, lambda tmp: Path(tmp).write_text(dump_config(self.config)))

    def progress_bar(self):
        if not (self.process.is_main and self.progress):
            return None
        return progress(total=self.config.loop.max_steps, initial=self.start_step, desc=f"train {self.config.name}",
                        unit="step")

    def ema_model(self) -> COMiT:
        """The model with the EMA weights (sharing the autoencoder)."""
        model = COMiT(self.config.model, autoencoder=self.model.vae)
        model.predictor.load_state_dict(self.ema.state_dict())
        return model.to(self.process.device).eval()

    def write_samples(self, step: int, logger: RunLog | None = None) -> None:
        cfg = self.config
        dataset = build_dataset(cfg.data.val_dataset or cfg.data.dataset, cfg.model.image_size, split="val")
        count = min(cfg.loop.sample_images, len(dataset))
        images = torch.stack([dataset[i]["image"] for i in range(count)]).to(self.process.device)
        generator = torch.Generator().manual_seed(0)
        model = self.ema_model()
        with torch.autocast(self.process.device.type, dtype=torch.bfloat16, enabled=self.autocast), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", PoorFitWarning)  # a model in training reconstructs poorly: no news
            recon = model.reconstruct(images, order=RasterScan(), num_crops=None, num_steps=10, cfg_weight=1.0,
                                      generator=generator)
        grid = torch.cat([torch.cat(list(images.cpu()), dim=2), torch.cat(list(recon.cpu().clamp(-1, 1)), dim=2)], dim=1)
        save_image(grid, self.out / "samples" / f"step-{step:09d}.png")  # atomic
        if logger:
            logger.write_image("samples", grid, step)

    def write_validation(self, step: int, bar, logger: RunLog | None = None) -> None:
        """The held-out curve (``validation.py``): one line of ``val.jsonl`` per evaluation."""
        cfg = self.config
        if self.val_images is None:
            dataset = build_dataset(cfg.data.val_dataset or cfg.data.dataset, cfg.model.image_size, split="val")
            self.val_images = torch.stack([dataset[i]["image"] for i in range(min(cfg.loop.eval_images, len(dataset)))])
        with torch.autocast(self.process.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            result = validate(self.ema_model(), self.val_images, step, step * cfg.optim.batch_size)
        append_line(self.out / VAL_FILE, step, result.record())
        if logger:
            logger.write_scalars("val", result.record(), step)
        if bar:
            bar.write(result.summary())

    def save_final_model(self) -> Path:
        target = self.out / "model"
        if self.process.is_main:
            provenance = self.provenance()
            self.ema_model().save_pretrained(target, model_card_kwargs={"provenance": provenance})
            # Beside the card, machine-readable: from_pretrained reads what the model learnt from.
            atomic_write(target / PROVENANCE_NAME, lambda tmp: Path(tmp).write_text(json.dumps(provenance, indent=2) + "\n"))
        if self.process.distributed:
            dist.barrier()
        return target

    def provenance(self) -> dict:
        """How the final model was made, for its model card."""
        cfg = self.config
        return {"command": f"comit train {self.out / 'config.yaml'}", "steps": cfg.loop.max_steps,
                "images_seen": cfg.loop.max_steps * cfg.optim.batch_size, "data": cfg.data.dataset,
                "wall_time_minutes": round(self.train_seconds() / 60, 2),
                "machine": f"{self.process.world_size} x {describe_device(self.process.device)}, torch {torch.__version__}",
                # `auto` resolved: the same config trains in bf16 on one CPU and fp32 on another.
                "precision": self.precision(),
                "date": time.strftime("%Y-%m-%d", time.gmtime()), "weights": "EMA"}


# ---------------------------------------------------------------------- entry points
def prepare_run(config_name: str | None, out: Path, resume: bool, overrides: list[str]) -> TrainConfig:
    """The config of a new run, or of the run in ``out`` when resuming (overrides still apply)."""
    out = Path(out)
    existing = out / CONFIG_FILE
    if resume:
        if not existing.is_file():
            raise ResumeError(f"nothing to resume: {out} holds no {CONFIG_FILE}; start a run there without --resume")
        return load_config(existing, overrides)
    if latest_checkpoint(out / "checkpoints") is not None:
        raise ResumeError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    return load_config(config_name, overrides)


def train(config: TrainConfig, out: Path, resume: bool = False, progress: bool = True) -> Path:
    """Run (or continue) training; returns the directory of the final EMA model."""
    torch.set_flush_denormal(True)
    trainer = Trainer(config, out, resume=resume, progress=progress)
    try:
        return trainer.run()
    finally:
        if trainer.process.distributed and dist.is_initialized():
            dist.destroy_process_group()
