"""The benchmark's sections. Each returns plain JSON-ready data.

Every measured operation first runs once untimed — the warm-up — while its transformer calls and
VAE encodes/decodes are counted and its peak memory is taken; then the operations of a section
are timed together, interleaved, ``repeats`` times. Outputs of the fast paths are compared with
the plain path's (``max_abs_diff``, ``same_tokens``) on the same random weights, so a speed-up
never silently changes results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..model.acceleration import autocast
from ..model.autoencoders import encode
from ..model.comit import COMiT
from ..model.guidance import guided_velocity
from ..model.policies import ADAPTIVE, Adaptive, RasterScan
from . import baseline
from .counting import count_calls
from .flops import transformer_call_flops
from .peak import default_gemm_size, gemm_flops, gemm_operands, gflops
from .setup import BenchSettings, Inputs
from .timing import Timing, peak_memory_mb, reset_peak_memory, synchronize, time_interleaved

NUM_STEPS = 10
GUIDANCE_WEIGHTS = (7.5, 1.0)
ADAPTIVE_CROPS = 3


@dataclass
class Context:
    settings: BenchSettings
    model: COMiT
    device: torch.device
    inputs: Inputs
    log: Callable[[str], None]

    def precision(self, precision: str | None = None):
        return autocast(self.device, precision or self.settings.precision)

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.settings.precision == "bf16" else torch.float32

    @property
    def gemm_size(self) -> int:
        return default_gemm_size(self.device, quick=self.settings.size == "tiny")

    def gemm(self, precision: str | None = None) -> tuple[Callable[[], object], int]:
        """The peak GEMM of this run, or of ``precision`` (a function), and its FLOPs."""
        size = self.gemm_size
        dtype = self.compute_dtype if precision is None else (torch.bfloat16 if precision == "bf16" else torch.float32)
        a, b = gemm_operands(self.device, dtype, size)
        return (lambda: a @ b), gemm_flops(size)


@contextmanager
def attention_mode(model: COMiT, mode: str) -> Iterator[None]:
    """Run the same weights in the other attention mode for a while."""
    previous = model.predictor.attention
    model.predictor.attention = mode
    try:
        yield
    finally:
        model.predictor.attention = previous


def measure(ctx: Context, functions: dict[str, Callable[[], object]], precision: str | None = None,
            count: bool = True) -> tuple[dict[str, dict], dict[str, object]]:
    """Warm-up run (counted, peak memory) of each function, then interleaved timing."""
    results, outputs = {}, {}

    def under_precision(function):
        def run():
            with torch.inference_mode(), ctx.precision(precision):
                return function()
        return run

    wrapped = {name: under_precision(function) for name, function in functions.items()}
    for name, function in wrapped.items():
        reset_peak_memory(ctx.device)
        with count_calls(ctx.model) as calls:
            outputs[name] = function()
        synchronize(ctx.device)
        results[name] = {"peak_memory_mb": round(peak_memory_mb(ctx.device), 1)}
        if count:
            results[name]["calls"] = calls.summary(ctx.model)
    timings = time_interleaved(wrapped, ctx.device, ctx.settings.repeats, ctx.settings.warmup)
    for name, timing in timings.items():
        results[name]["timing"] = timing.as_dict()
        results[name]["seconds"] = timing.median_s
    return results, outputs


def speedup(plain: Timing | dict, fast: Timing | dict) -> float:
    plain_s = plain["seconds"] if isinstance(plain, dict) else plain.median_s
    fast_s = fast["seconds"] if isinstance(fast, dict) else fast.median_s
    return plain_s / fast_s


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def latent_sides(model: COMiT) -> tuple[int, int]:
    """Latent side of one local crop and of the whole image."""
    factor = model.config.autoencoder.factor
    return model.config.crop_size // factor, model.config.latent_size


def predictor_inputs(model: COMiT, batch: int, side: int, seed: int) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.config.in_channels, side, side, generator=generator).to(model.device)
    ids = torch.randint(0, model.codebook_size, (batch, model.config.num_msg_tokens), generator=generator)
    messages = model.quantizer.indices_to_codes(ids.to(model.device))
    offsets = (torch.rand(batch, 2, generator=generator) * 2 - 1).to(model.device)
    return x, torch.rand(batch, generator=generator).to(model.device), messages, offsets


# ---------------------------------------------------------------------- peak
def peak_section(ctx: Context) -> dict:
    gemm, flops = ctx.gemm()
    timing = time_interleaved({"gemm": gemm}, ctx.device, max(ctx.settings.repeats, 5), warmup=2)["gemm"]
    result = {"gemm_size": ctx.gemm_size, "dtype": str(ctx.compute_dtype).replace("torch.", ""),
              "gflops": gflops(flops, timing), "timing": timing.as_dict()}
    ctx.log(f"peak: {result['gflops']['median']:.0f} GFLOP/s ({result['dtype']} {result['gemm_size']}^3 GEMM)")
    return result


# ---------------------------------------------------------------------- forward
def forward_section(ctx: Context) -> list[dict]:
    """Predictor forward at the crop-encoding length (with queries) and the decoding length
    (queries dropped where exact), each timed interleaved with the GEMM for a same-moment peak."""
    model, rows = ctx.model, []
    crop_side, full_side = latent_sides(model)
    gemm, gemm_work = ctx.gemm()
    for batch in sorted(set(ctx.settings.forward_batches) | {ctx.settings.batch}):
        for mode in ctx.settings.attention:
            for kind, side, with_queries in (("encode", crop_side, True), ("decode", full_side, False)):
                x, t, messages, offsets = predictor_inputs(model, batch, side, ctx.settings.seed)
                if kind == "encode":
                    t = torch.ones_like(t)

                def forward(x=x, t=t, messages=messages, offsets=offsets, with_queries=with_queries):
                    return model.predictor(x, t, messages, offsets, with_queries=with_queries)

                with attention_mode(model, mode):
                    results, _ = measure(ctx, {"gemm": gemm, "forward": forward}, count=False)
                    flops = transformer_call_flops(model.predictor, batch, side, with_queries)
                seconds = results["forward"]["seconds"]
                peak = gemm_work / results["gemm"]["seconds"] / 1e9
                achieved = flops.total / seconds / 1e9
                rows.append({"attention": mode, "kind": kind, "batch": batch,
                             "tokens_per_sample": flops.tokens // batch,
                             "flops": flops.as_dict(), "timing": results["forward"]["timing"],
                             "ms": 1e3 * seconds, "gflops": achieved, "peak_gflops": peak,
                             "pct_of_peak": 100 * achieved / peak,
                             "peak_memory_mb": results["forward"]["peak_memory_mb"]})
                ctx.log(f"forward {mode} {kind} batch {batch}: {1e3 * seconds:.1f} ms, {achieved:.0f} GFLOP/s, "
                        f"{100 * achieved / peak:.0f}% of peak")
    return rows


# ---------------------------------------------------------------------- tokenize
def tokenize_section(ctx: Context) -> list[dict]:
    """Global crop only; adaptive with 3 local crops (ours, the latent-error policy and the
    released call pattern); raster over all local crops."""
    model, images, noise = ctx.model, ctx.inputs.images, ctx.inputs.noise
    num_local = model.crops.num_local
    cases = {
        "global": lambda: model.tokenize(images, global_crop=True, order=[0], num_crops=None),
        ADAPTIVE: lambda: model.tokenize(images, order=Adaptive(), num_crops=ADAPTIVE_CROPS, noise=noise),
        f"{ADAPTIVE}_latent": lambda: model.tokenize(images, order=Adaptive(), num_crops=ADAPTIVE_CROPS, noise=noise,
                                                     error_signal="latent"),
        f"{ADAPTIVE}_baseline": lambda: baseline.tokenize_adaptive(model, images, noise, ADAPTIVE_CROPS),
        "raster": lambda: model.tokenize(images, order=RasterScan(), num_crops=num_local),
    }
    rows = []
    for mode in ctx.settings.attention:
        with attention_mode(model, mode):
            results, outputs = measure(ctx, cases)
        reference = outputs[f"{ADAPTIVE}_baseline"]
        for name, result in results.items():
            row = {"attention": mode, "case": name, "crops": int(outputs[name].crop_order.shape[0]),
                   "variant": "baseline" if name.endswith("baseline") else "ours",
                   "images_per_s": images.shape[0] / result["seconds"], **result}
            if name.startswith(ADAPTIVE) and not name.endswith("baseline"):
                row["speedup_vs_baseline"] = speedup(results[f"{ADAPTIVE}_baseline"], result)
                row["same_crop_order_as_baseline"] = bool(torch.equal(outputs[name].crop_order, reference.crop_order))
                row["same_tokens_as_baseline"] = bool(torch.equal(outputs[name].ids, reference.ids))
            rows.append(row)
            ctx.log(f"tokenize {mode} {name}: {1e3 * result['seconds']:.0f} ms"
                    + (f", x{row['speedup_vs_baseline']:.2f} vs baseline" if "speedup_vs_baseline" in row else ""))
    return rows


# ---------------------------------------------------------------------- detokenize
def detokenize_section(ctx: Context) -> list[dict]:
    """10 Euler steps at guidance 7.5 and 1.0, with and without the VAE decode; ours against the
    released call pattern."""
    model, inputs = ctx.model, ctx.inputs
    cases = {}
    for weight in GUIDANCE_WEIGHTS:
        for decode in (False, True):
            key = f"w={weight}{' +decode' if decode else ''}"
            cases[f"{key}|ours"] = lambda w=weight, d=decode: model.detokenize(
                inputs.messages, inputs.offsets, num_steps=NUM_STEPS, cfg_weight=w, noise=inputs.noise, decode=d)
            cases[f"{key}|baseline"] = lambda w=weight, d=decode: baseline.detokenize(
                model, inputs.messages, inputs.offsets, inputs.noise, num_steps=NUM_STEPS, cfg_weight=w, decode=d)
    rows = []
    for mode in ctx.settings.attention:
        with attention_mode(model, mode):
            results, outputs = measure(ctx, cases)
        for name, result in results.items():
            key, variant = name.split("|")
            row = {"attention": mode, "case": key, "cfg_weight": float(key.split("=")[1].split()[0]),
                   "decode": key.endswith("+decode"), "steps": NUM_STEPS, "variant": variant,
                   "images_per_s": inputs.messages.shape[0] / result["seconds"], **result}
            if variant == "ours":
                row["speedup_vs_baseline"] = speedup(results[f"{key}|baseline"], result)
                row["max_abs_diff_vs_baseline"] = max_abs_diff(outputs[name], outputs[f"{key}|baseline"])
                ctx.log(f"detokenize {mode} {key}: {1e3 * result['seconds']:.0f} ms, "
                        f"x{row['speedup_vs_baseline']:.2f} vs baseline")
            rows.append(row)
    return rows


# ---------------------------------------------------------------------- fast paths one by one
def fast_path_row(ctx: Context, name: str, mode: str, fast: Callable, plain: Callable,
                  compare: Callable[[object, object], float] | None = None, precision: str | None = None,
                  note: str = "") -> dict:
    with attention_mode(ctx.model, mode):
        results, outputs = measure(ctx, {"fast": fast, "plain": plain}, precision=precision, count=False)
    row = {"fast_path": name, "attention": mode, "fast_ms": 1e3 * results["fast"]["seconds"],
           "plain_ms": 1e3 * results["plain"]["seconds"], "fast_timing": results["fast"]["timing"],
           "plain_timing": results["plain"]["timing"], "speedup": speedup(results["plain"], results["fast"]),
           "max_abs_diff": compare(outputs["fast"], outputs["plain"]) if compare else None, "note": note,
           "fast_peak_memory_mb": results["fast"]["peak_memory_mb"],
           "plain_peak_memory_mb": results["plain"]["peak_memory_mb"]}
    row["faster"] = row["speedup"] > 1.0
    ctx.log(f"fast path {name} ({mode}): x{row['speedup']:.2f}")
    return row


def fast_paths_section(ctx: Context) -> dict:
    model, batch, seed = ctx.model, ctx.settings.batch, ctx.settings.seed
    crop_side, full_side = latent_sides(model)
    encode_args = predictor_inputs(model, batch, crop_side, seed)
    decode_args = predictor_inputs(model, batch, full_side, seed)
    every_layer = tuple(range(model.config.depth))
    velocity_diff = lambda a, b: max_abs_diff(a.velocity, b.velocity)  # noqa: E731
    rows = []
    for mode in ctx.settings.attention:
        rows.append(fast_path_row(
            ctx, "fused_attention", mode, lambda: model.predictor(*encode_args),
            lambda: model.predictor(*encode_args, attention_layers=every_layer),
            lambda a, b: max(max_abs_diff(a.velocity, b.velocity), max_abs_diff(a.message, b.message)),
            note="SDPA with the bool mask (hard) or additive bias (released) vs explicit softmax attention; "
                 "crop-encoding length"))
    if "hard" in ctx.settings.attention:
        rows.append(fast_path_row(
            ctx, "drop_queries", "hard", lambda: model.predictor(*decode_args, with_queries=False),
            lambda: model.predictor(*decode_args, with_queries=True), velocity_diff,
            note="decoding call without the M query tokens"))
    mode = "hard" if "hard" in ctx.settings.attention else ctx.settings.attention[0]
    x, t = ctx.inputs.noise, torch.zeros(batch, device=ctx.device)
    messages, offsets, empty = ctx.inputs.messages, ctx.inputs.offsets, model.empty_message(batch)

    def ours(weight):
        return lambda: guided_velocity(model.velocity, messages, empty, offsets, weight)(x, t)

    def plain(weight, **flags):
        return lambda: baseline.velocity_function(model, messages, offsets, weight, keep_queries=False, **flags)(x, t)

    rows.append(fast_path_row(ctx, "skip_unconditional_at_w1", mode, ours(1.0),
                              plain(1.0, batch_passes=True), max_abs_diff,
                              note="one guided velocity at w=1: conditional pass only"))
    rows.append(fast_path_row(ctx, "batch_guidance_passes", mode, ours(7.5),
                              plain(7.5, batch_passes=False, skip_unconditional_at_1=True), max_abs_diff,
                              note="one guided velocity at w=7.5: cond+uncond as one call of 2B vs two calls of B"))
    rows.append(inference_mode_row(ctx, decode_args))
    if has_layout_option(model) and ctx.device.type == "cpu":
        rows += vae_layout_rows(ctx, mode)
    if ctx.settings.precision == "fp32":
        rows.append(fast_path_row(ctx, "bf16_autocast", mode, lambda: _bf16(ctx, decode_args),
                                  lambda: model.predictor(*decode_args, with_queries=False),
                                  lambda a, b: max_abs_diff(a, b.velocity),
                                  note="opt-in, not exact: decoding call in bf16 autocast vs fp32"))
    if ctx.settings.compile:
        rows.append(fast_path_row(ctx, "torch_compile", mode, lambda: model.predictor(*decode_args, with_queries=False),
                                  lambda: model.predictor.forward(*decode_args, with_queries=False), velocity_diff,
                                  note="opt-in: compiled vs eager decoding call"))
    units = unit_costs(ctx)
    return {"rows": rows, "unit_costs_ms": units, "adaptive_attribution": adaptive_attribution(units, ctx)}


def vae_layout_rows(ctx: Context, mode: str) -> list[dict]:
    """SD-VAE decode and whole-image encode with channels-last inputs vs the default layout."""
    vae, latents, images = ctx.model.vae, ctx.inputs.noise, ctx.inputs.images

    def in_layout(function, channels_last):
        def run():
            with baseline.vae_layout(ctx.model, channels_last):
                return function()
        return run

    return [fast_path_row(ctx, f"vae_channels_last_{name}", mode, in_layout(function, True),
                          in_layout(function, False), max_abs_diff,
                          note=f"SD-VAE {name} with channels-last input vs the default layout")
            for name, function in (("decode", lambda: vae.decode(latents)), ("encode", lambda: vae.encode(images)))]


def has_layout_option(model: COMiT) -> bool:
    return hasattr(model.vae, "channels_last")


def _bf16(ctx: Context, args: tuple) -> torch.Tensor:
    with autocast(ctx.device, "bf16"):
        return ctx.model.predictor(*args, with_queries=False).velocity.float()


def inference_mode_row(ctx: Context, args: tuple) -> dict:
    """inference_mode vs autograd bookkeeping (grad enabled: the graph is built and kept)."""

    def with_grad():
        with torch.inference_mode(False), torch.enable_grad():
            return ctx.model.predictor(*[a.clone() for a in args], with_queries=False).velocity.detach()

    mode = "hard" if "hard" in ctx.settings.attention else ctx.settings.attention[0]
    return fast_path_row(ctx, "inference_mode", mode, lambda: ctx.model.predictor(*args, with_queries=False).velocity,
                         with_grad, max_abs_diff, note="decoding call under inference_mode vs with autograd recording")


def unit_costs(ctx: Context) -> dict:
    """Median ms of the pieces the adaptive policy is made of, at the run's batch size (VAE pieces
    also in the default layout when the channels-last fast path applies)."""
    model, batch, seed = ctx.model, ctx.settings.batch, ctx.settings.seed
    crop_side, full_side = latent_sides(model)
    encode_args = predictor_inputs(model, batch, crop_side, seed)
    decode_args = predictor_inputs(model, batch, full_side, seed)
    crop = model.crops.cut(ctx.inputs.images, torch.zeros(batch, dtype=torch.long), False)
    functions = {"vae_encode_crop": lambda: encode(model.vae, crop),
                 "vae_encode_image": lambda: encode(model.vae, ctx.inputs.images),
                 "vae_decode_image": lambda: model.vae.decode(ctx.inputs.noise)}
    if has_layout_option(model) and ctx.device.type == "cpu" and model.vae.channels_last:
        for name in list(functions):
            functions[f"{name}_default_layout"] = lambda f=functions[name]: _default_layout(model, f)
    for mode in ctx.settings.attention:
        functions[f"{mode}:write_call"] = lambda m=mode: _in_mode(model, m, lambda: model.predictor(*encode_args))
        functions[f"{mode}:recon_call"] = lambda m=mode: _in_mode(
            model, m, lambda: model.predictor(*decode_args, with_queries=False))
        functions[f"{mode}:recon_call_with_queries"] = lambda m=mode: _in_mode(
            model, m, lambda: model.predictor(*decode_args, with_queries=True))
    results, _ = measure(ctx, functions, count=False)
    return {name: 1e3 * result["seconds"] for name, result in results.items()}


def _in_mode(model: COMiT, mode: str, function: Callable) -> object:
    with attention_mode(model, mode):
        return function()


def _default_layout(model: COMiT, function: Callable) -> object:
    with baseline.default_vae_layout(model):
        return function()


def adaptive_attribution(units: dict, ctx: Context, crops: int = ADAPTIVE_CROPS) -> dict:
    """What each adaptive-policy fast path saves per batch, priced with the measured unit costs,
    applied one after the other to the released pattern (see comit.bench.baseline). The two
    estimates can be set against the measured tokenize times."""
    rows, estimates = [], {}
    retokenized = crops * (crops + 1) // 2  # prefixes 1..K, re-tokenized before each choice
    encode_crop, decode = units["vae_encode_crop"], units["vae_decode_image"]
    plain_encode = units.get("vae_encode_crop_default_layout", encode_crop)
    plain_decode = units.get("vae_decode_image_default_layout", decode)
    for mode in ctx.settings.attention:
        write, recon_q = units[f"{mode}:write_call"], units[f"{mode}:recon_call_with_queries"]
        recon = units[f"{mode}:recon_call"]
        steps = [
            ("carry the message instead of re-tokenizing each prefix (and re-encoding its crops)",
             retokenized * (write + plain_encode)),
            ("no reconstruction after the last crop", 2 * recon_q + plain_decode),
            ("no unconditional pass at guidance weight 1", (crops - 1) * recon_q),
            ("drop the queries in the reconstruction call (hard mode only)", (crops - 1) * (recon_q - recon)),
            ("channels-last SD-VAE inputs",
             crops * (plain_encode - encode_crop) + (crops - 1) * (plain_decode - decode)),
        ]
        baseline_ms = (retokenized + crops) * (write + plain_encode) + crops * (2 * recon_q + plain_decode)
        estimates[mode] = {"baseline_ms": baseline_ms,
                           "ours_ms": crops * (write + encode_crop) + (crops - 1) * (recon + decode)}
        for label, saved in steps:
            rows.append({"attention": mode, "fast_path": label, "saved_ms": saved,
                         "share_of_baseline": saved / baseline_ms})
    return {"rows": rows, "estimates": estimates}


def train_section(ctx: Context) -> dict:
    from .training import train_step_benchmark

    return train_step_benchmark(ctx)


# ---------------------------------------------------------------------- dataset tokenize
DATASET_BATCHES = 4  # the benchmark's dataset is this many batches
DATASET_MIN_BATCH = 8


class _Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "index": index}


def dataset_section(ctx: Context) -> list[dict]:
    """`comit tokenize --data` (DataLoader, batches, shard files written) against a loop over one
    image at a time, on the same images and settings (adaptive, 3 local crops)."""
    import tempfile
    from pathlib import Path

    from ..token_shards import plan_shards, tokenize_to_shards

    model = ctx.model
    batch = max(ctx.settings.batch, DATASET_MIN_BATCH)
    generator = torch.Generator().manual_seed(ctx.settings.seed)
    size = model.config.image_size
    images = torch.rand(DATASET_BATCHES * batch, 3, size, size, generator=generator) * 2 - 1
    dataset, sources = _Images(images), [f"bench#{i}" for i in range(len(images))]
    settings = {"order": ADAPTIVE, "num_crops": ADAPTIVE_CROPS, "global_crop": False, "seed": ctx.settings.seed}
    plan = plan_shards("random weights", settings, "bench", sources, shard_size=2 * batch)

    resume_checks = []

    def shards():
        with tempfile.TemporaryDirectory() as folder:
            written = tokenize_to_shards(model, dataset, Path(folder) / "tokens", plan, batch_size=batch,
                                         sources=sources, show_progress=False).images
            # A re-run finds every shard done and checks each (load, rows, images, settings): its cost.
            started = time.perf_counter()
            tokenize_to_shards(model, dataset, Path(folder) / "tokens", plan, batch_size=batch, sources=sources,
                               show_progress=False)
            resume_checks.append((time.perf_counter() - started) / plan.num_shards)
            return written

    def one_at_a_time():
        for index in range(len(images)):
            model.tokenize(images[index:index + 1].to(ctx.device), order=Adaptive(), num_crops=ADAPTIVE_CROPS)
        return len(images)

    results, _ = measure(ctx, {"shards": shards, "one_at_a_time": one_at_a_time}, count=False)
    rows = [{"case": name, "batch": batch if name == "shards" else 1, "images": len(images),
             "images_per_s": len(images) / result["seconds"], **result} for name, result in results.items()]
    rows[0]["speedup_vs_one_at_a_time"] = speedup(results["one_at_a_time"], results["shards"])
    rows[0]["resume_check_ms_per_shard"] = 1e3 * sorted(resume_checks)[len(resume_checks) // 2]
    ctx.log(f"dataset tokenize: {rows[0]['images_per_s']:.1f} img/s in shards of batches of {batch}, "
            f"{rows[1]['images_per_s']:.1f} img/s one at a time (x{rows[0]['speedup_vs_one_at_a_time']:.2f})")
    return rows
