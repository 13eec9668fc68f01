"""``comit eval align``: do single message tokens line up with objects?

For each image: tokenize under the crop policy, take every token's attention over the image
patches while the decoder reads the message (``COMiT.attention_maps``: one layer, averaged over
a few flow times, heads aggregated), upsample the maps to the mask size, keep each map's top Q %
of pixels and score the best token's IoU with the ground truth (``AlignmentIoU``), averaged over
the Q list. The same score for random maps is reported as the floor to beat, and for the object
masks themselves as maps as the ceiling (under 1, far under on small objects: see ``comit.metrics.alignment``),
with the scores of maps cut at each mask's own area beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..model.comit import COMiT
from ..metrics.alignment import AlignmentIoU
from .protocol import ATTENTION_NOISE, EvalSettings, batches, image_generator, per_image_noise, tokenize_batch
from .results import EvalResult

DEFAULT_QS = (10.0, 20.0, 30.0, 40.0, 50.0)


@dataclass(kw_only=True)
class AlignResult(EvalResult):
    """``eval align``'s numbers: ``metrics`` (the ``ALIGN_METRICS``, means over Q) and one
    ``per_q`` row per top-Q percentage."""

    BODY = ("metrics", "per_q")
    metrics: dict[str, float | int]
    per_q: list[dict[str, float]]


@dataclass
class AlignSettings:
    """Which attention is read (see ``COMiT.attention_maps``) and the top-Q percentages."""

    layer: int = -1
    times: Sequence[float] = (0.25, 0.5, 0.75)
    heads: str | int = "mean"
    direction: str = "token_to_patch"
    qs: Sequence[float] = DEFAULT_QS

    def describe(self) -> dict:
        described = asdict(self)
        described["times"], described["qs"] = list(self.times), list(self.qs)
        return described


def evaluate_alignment(model: COMiT, dataset: Dataset, settings: EvalSettings | None = None,
                       align: AlignSettings | None = None) -> AlignResult:
    """Best-token IoU between attention maps and object masks over ``dataset``.

    Items need ``image``, ``masks`` (bool ``[K, S, S]``) and ``valid`` (``[K]``): the shapes data
    and ``MaskFolderDataset`` provide them. The metrics hold ``miou_image`` (all objects of an
    image as one mask: the paper's protocol on salient-object data), ``miou_object`` (each object on its own: fair on multi-object images) and the
    random-map floor (``random_*``) and object-mask ceiling (``oracle_*``) of each, all four also with
    maps cut at each mask's own area (``*_matched``).
    """
    settings, align = settings or EvalSettings(), align or AlignSettings()
    settings.check(model)
    scored = {who: AlignmentIoU(align.qs) for who in ("", "random_", "oracle_")}
    for batch in batches(dataset, settings.batch_size, "align", settings.progress):
        if "masks" not in batch:
            raise ValueError("alignment needs object masks: use the shapes data or a folder with --masks DIR")
        maps = attention_batch(model, batch, settings, align)
        controls = {"": maps, "random_": random_maps(maps, batch["position"], settings.seed),
                    "oracle_": mask_maps(batch["masks"], batch["valid"])}
        for who, metric in scored.items():
            metric.update(controls[who], batch["masks"], batch["valid"])
    scores = {who: metric.compute() for who, metric in scored.items()}
    per_q = [{"q": q, **{f"{who}miou_{kind}": scores[who][f"miou_{kind}_q{q:g}"] for who in scored
                         for kind in ("image", "object")}} for q in align.qs]
    metrics = {f"{who}miou_{kind}{cut}": scores[who][f"miou_{kind}{cut}"]
               for cut in ("", "_matched") for who in scored for kind in ("image", "object")}
    metrics.update(num_images=scores[""]["num_images"], num_objects=scores[""]["num_objects"])
    skipped = len(dataset) - metrics["num_images"]
    notes = [f"{skipped} images without a non-empty mask were skipped"] if skipped else []
    return AlignResult(metrics=metrics, per_q=per_q, notes=notes, settings={**settings.describe(), **align.describe()})


def attention_batch(model: COMiT, batch: dict, settings: EvalSettings, align: AlignSettings,
                    tokens=None) -> torch.Tensor:
    """Per-token maps ``[B, M, h, w]`` (on the CPU) for a batch, tokenizing it unless given tokens."""
    if tokens is None:
        tokens = tokenize_batch(model, batch["image"], batch["position"], settings)
    noise = per_image_noise(model, batch["position"], settings.seed, ATTENTION_NOISE)
    return model.attention_maps(batch["image"].to(model.device), tokens, layer=align.layer, times=tuple(align.times),
                                heads=align.heads, direction=align.direction, noise=noise).float().cpu()


def random_maps(maps: torch.Tensor, positions: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform random maps shaped like ``maps``, fixed per image: the chance level of the score."""
    return torch.stack([torch.rand(maps.shape[1:], generator=image_generator(seed, int(p), ATTENTION_NOISE))
                        for p in positions])


def mask_maps(masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The object masks as maps ``[B, 1 + O, H, W]`` (their union first, empty slots all zero): the
    best any token could do, since a map equal to a mask keeps every mask pixel before any other."""
    masks = masks.bool() & valid.bool()[..., None, None]
    return torch.cat([masks.any(1, keepdim=True), masks], dim=1).float()


def write_align_report(out: Path, results: AlignResult) -> None:
    """results.json, results.md and miou_vs_q.png (model and random floor against Q)."""
    from ..plots import plot_curves
    from .report import markdown_report, markdown_table, write_results

    long = [{"q": r["q"], "score": f"{who}{kind}", "miou": r[f"{prefix}miou_{kind}"]}
            for r in results.per_q for who, prefix in (("", ""), ("random ", "random_"), ("ceiling (masks) ", "oracle_"))
            for kind in ("image", "object")]
    plot_curves(long, x="q", y="miou", hue="score", path=out / "miou_vs_q.png", xlabel="Q (% of pixels kept)",
                ylabel="mean best-token IoU", title="Token–object alignment")
    metrics = results.metrics
    headline = markdown_table([
        {"score": f"{label}{cut_label}", "model": metrics[f"miou_{kind}{cut}"],
         "random maps": metrics[f"random_miou_{kind}{cut}"], "masks as maps (ceiling)": metrics[f"oracle_miou_{kind}{cut}"]}
        for cut, cut_label in (("", ", top Q %"), ("_matched", ", maps cut at the mask's area"))
        for kind, label in (("image", "per image (all objects as one mask)"),
                            ("object", "per object (best token for each object)"))],
        ["score", "model", "random maps", "masks as maps (ceiling)"])
    counts = f"{metrics['num_images']} images, {metrics['num_objects']} objects; mean over Q = " \
             f"{', '.join(f'{q:g}' for q in results.settings['qs'])} %. The masks as maps are the best any " \
             "token can score: at top Q % under 1 unless an object covers exactly Q % of the image, 1 when " \
             "each map is cut at the mask's own area."
    per_q = markdown_table(results.per_q, ["q", "miou_image", "miou_object", "random_miou_image",
                                              "random_miou_object", "oracle_miou_image", "oracle_miou_object"])
    sections = [("Mean IoU", headline + "\n\n" + counts), ("Per Q", per_q + "\n\n![mIoU against Q](miou_vs_q.png)")]
    data = results.to_json()
    write_results(out, data, markdown_report("Token–object alignment", data, sections))


# ---------------------------------------------------------------------- tokens over objects
TOKEN_FIGURE_Q = 30.0  # the middle of the default Q list


@dataclass(kw_only=True)
class TokenExamples(EvalResult):
    """For the first val images: the token whose attention map best covers all the image's objects
    (``evaluate_alignment``'s protocol at one Q), its map at the attention's own resolution and its
    IoU — the data of the paper's tokens-over-objects figure, kept so the figure can be drawn
    again without the model."""

    BODY = ("examples",)
    examples: list[dict]  # {"index", "token", "iou", "map": [[...]]}


def best_token_examples(model: COMiT, dataset: Dataset, settings: EvalSettings, count: int = 6,
                        q: float = TOKEN_FIGURE_Q) -> TokenExamples:
    """The best token of each of the first ``count`` images (noise fixed by the image's index, as in
    ``evaluate_alignment``)."""
    import torch.nn.functional as F

    from ..metrics.alignment import best_token_iou

    examples = []
    with torch.no_grad():
        for index in range(min(count, len(dataset))):
            item = dataset[index]
            batch = {"image": item["image"][None], "position": torch.tensor([index])}
            maps = attention_batch(model, batch, settings, AlignSettings())[0]
            foreground = item["masks"][item["valid"]].any(0)
            sized = F.interpolate(maps[None], size=tuple(foreground.shape), mode="bilinear", align_corners=False)[0]
            iou, _, chosen = best_token_iou(sized, foreground, (q,))
            token = int(chosen[0])
            examples.append({"index": index, "token": token, "iou": round(iou, 4), "map": maps[token].tolist()})
    return TokenExamples(examples=examples, settings={**settings.describe(), "q": q, "count": count,
                                                      "image_size": model.config.image_size})


def tokens_over_objects(dataset: Dataset, columns: dict[str, TokenExamples]) -> Image.Image:
    """One row per image: the image with its objects outlined, then each column's best token over it."""
    from ..viz.figures import Panel, attention_overlay, display_scale, panel_grid, upscale

    first = next(iter(columns.values()))
    scale = display_scale(int(first.settings["image_size"]), 128)
    panels = []
    for row, example in enumerate(first.examples):
        item = dataset[example["index"]]
        panels.append(Panel(outlined(upscale(item["image"], scale), item["masks"][item["valid"]].any(0), scale),
                            ["val image", f"#{example['index']}"]))
        for label, result in columns.items():
            shown = result.examples[row]
            panels.append(Panel(attention_overlay(item["image"], torch.tensor(shown["map"]), scale),
                                [label, f"token #{shown['token']}, IoU {shown['iou']:.2f}"]))
    return panel_grid(panels, columns=1 + len(columns))


def outlined(picture: Image.Image, mask: torch.Tensor, scale: int) -> Image.Image:
    """``picture`` (the image upscaled by ``scale``) with the outline of ``mask`` in white."""
    import numpy as np
    import torch.nn.functional as F

    pixels = np.asarray(picture).copy()
    big = mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    inner = F.max_pool2d((~big)[None, None].float(), 3, 1, 1)[0, 0] > 0
    pixels[(big & inner).numpy()] = 255
    return Image.fromarray(pixels)


def write_token_examples(out: Path, results: TokenExamples, dataset: Dataset, label: str) -> None:
    """results.json, results.md and tokens_over_objects.png (this model's column alone)."""
    from .report import markdown_report, markdown_table, write_results

    out.mkdir(parents=True, exist_ok=True)
    tokens_over_objects(dataset, {label: results}).save(out / "tokens_over_objects.png")
    table = markdown_table([{k: e[k] for k in ("index", "token", "iou")} for e in results.examples],
                           ["index", "token", "iou"])
    data = results.to_json()
    write_results(out, data, markdown_report("Tokens over objects", data, [
        ("Best token per image", table + f"\n\nTop {results.settings['q']:g} % of each map kept; all objects of "
                                         "an image as one mask.\n\n![tokens over objects](tokens_over_objects.png)")]))
