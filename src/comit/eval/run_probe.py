"""``comit eval probe``: what do frozen messages know? A 2-layer attention probe per task.

Tokenize the probe-training images and the test images under the crop policy (the paper probes
the global crop only: ``probe_policy()``), build each task's samples (``probe_tasks``), train a
probe on token ids through a learned embedding (or on the FSQ codes) with a validation split
taken from the training images and early stopping, then report top-1 / top-5 on the test sets.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from ..data import build_dataset
from ..devices import torch_threads
from ..progress import progress as progress_bar
from ..data.folder import ImageFolderDataset
from ..data.labels_file import LabelsFileDataset
from ..model.comit import COMiT
from ..model.policies import RASTER_SCAN
from ..metrics.probe import AttentionProbe, append_question, evaluate_probe, split_indices, train_probe
from ..metrics.probe_controls import (CONTROL_TEXT, CONTROLS, random_codes, random_ids, scene_codes, scene_ids,
                             scene_vocab_size)
from ..metrics.probe_tasks import Samples, Task, build_tasks, default_tasks
from .protocol import EvalSettings, batches, first_items, tokenize_batch
from .results import EvalResult

SHAPES_META = ("valid", "shape", "color", "size", "relations", "center")
MODEL_MESSAGES = "model"  # the rows of the tokenizer's own messages; the others are the controls


def probe_metric_key(row: dict) -> str:
    """The metric a score row reports: ``<task>_<primary>``, with the test set's name between
    where the task has several (``compositional_unseen_pairs_top5``)."""
    test = "" if row["test"] == "test" else f"_{row['test']}"
    return f"{row['task']}{test}_{row['primary']}"


@dataclass(kw_only=True)
class ProbeResult(EvalResult):
    """``eval probe``'s numbers: ``metrics`` (each task's primary score, ``PROBE_METRICS``), one
    ``rows`` entry per (task, test set) with top-1 / top-5 and their floors, and the training
    ``history`` (validation top-1 per epoch)."""

    BODY = ("metrics", "rows", "history")
    metrics: dict[str, float | None]
    rows: list[dict]
    history: list[dict]

    def floor(self, key: str) -> float | None:
        """The chance level of metric ``key``: the majority answer's score on its test set."""
        row = self._row(key, MODEL_MESSAGES)
        return None if row is None else row.get(f"majority_{row['primary']}")

    def control_score(self, key: str, messages: str) -> float | None:
        """Metric ``key`` of the probe reading control ``messages`` (``scene``: the ceiling; ``random``)."""
        row = self._row(key, messages)
        return None if row is None else row.get(row["primary"])

    def _row(self, key: str, messages: str) -> dict | None:
        return next((row for row in self.rows if row.get("messages", MODEL_MESSAGES) == messages
                     and probe_metric_key(row) == key), None)


def probe_policy(**overrides) -> EvalSettings:
    """The paper's probing policy: the global crop only."""
    return EvalSettings(**{"order": RASTER_SCAN, "num_crops": 1, "global_crop": True, **overrides})


@dataclass
class ProbeSettings:
    """Which tasks, what the probe reads, and how it trains (see ``train_probe``)."""

    tasks: tuple[str, ...] | None = None  # None: every task the data supports
    # Chosen by measurement so that every task's positive control reads (docs/evaluation.md, "Probes
    # that can read"): the FSQ codes (a learned embedding of 64,000 ids sees most ids once or never),
    # small batches and a one-cycle schedule (a few thousand steps on a few thousand images). 60
    # epochs, never stopping before 30: with 30 (never before 15) the relational probe sat in a
    # partial optimum at 2 of 10 seeds (0.58 and 0.36 on the true scene, the others 0.83-0.88); the
    # slower decay let it out at all 10 (docs/evaluation.md, "A probe seed that could not read").
    input: str = "codes"  # "codes" (the FSQ codes) or "ids" (a learned embedding per token id)
    epochs: int = 60
    patience: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    schedule: str = "one_cycle"
    weight_decay: float = 0.05
    dim: int = 64
    heads: int = 4
    depth: int = 2
    val_fraction: float = 0.1
    holdout_fraction: float = 0.2
    seed: int = 0
    controls: bool = True  # also probe the positive and negative control messages (shapes data)
    cells: int | None = None  # the scene control's grid side (None: the message grid's)

    def describe(self) -> dict:
        described = asdict(self)
        described["tasks"] = list(self.tasks) if self.tasks else "all"
        return {f"probe_{k}" if k in ("input", "seed", "batch_size", "epochs", "lr") else k: v
                for k, v in described.items()}


class CompactIds:
    """Token ids seen in probe training renumbered 0..V-1; every other id becomes V ("unseen").

    A 64,000-row embedding of which a few thousand rows ever get a gradient costs the optimiser
    (AdamW touches every row) most of its time; rows never seen in training would stay at their
    random initialisation anyway, so one shared "unseen" row loses nothing a probe could use.
    """

    def __init__(self, ids: torch.Tensor):
        self.known = torch.unique(ids)

    @property
    def size(self) -> int:
        return len(self.known) + 1

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        position = torch.searchsorted(self.known, ids).clamp(max=len(self.known) - 1)
        return torch.where(self.known[position] == ids, position, torch.full_like(ids, len(self.known)))


@dataclass
class Messages:
    """Frozen messages of a set of images and their annotations (one row per image)."""

    ids: torch.Tensor  # [N, M]
    codes: torch.Tensor  # [N, M, D]
    meta: dict[str, torch.Tensor]
    vocab_size: int
    levels: tuple[int, ...] = ()  # the FSQ levels of the codes (what random control codes are drawn from)

    def control(self, kind: str, cells: int, seed: int) -> "Messages":
        """The same images' control messages of the same length (``probe_controls``): ``scene`` (the
        true scene written as tokens) or ``random``; ``seed`` fixes their random slots or tokens."""
        count, length = self.ids.shape
        if kind == "scene":
            if "center" not in self.meta:
                raise ValueError("the scene control needs object annotations (the shapes data)")
            return Messages(scene_ids(self.meta, length, cells, seed), scene_codes(self.meta, length, cells, seed),
                            self.meta, scene_vocab_size(cells))
        if kind == "random":
            return Messages(random_ids(count, length, self.vocab_size, seed),
                            random_codes(count, length, self.levels, seed), self.meta, self.vocab_size, self.levels)
        raise ValueError(f"unknown probe control {kind!r}; use {', '.join(CONTROLS)}")

    def inputs(self, samples: Samples, kind: str, vocabulary: CompactIds | None = None) -> torch.Tensor:
        """The probe inputs of ``samples``: their message (ids, renumbered by ``vocabulary`` when
        given, or codes) and their question if any."""
        if kind not in ("ids", "codes"):
            raise ValueError(f"probe input must be 'ids' or 'codes', got {kind!r}")
        if kind == "ids":
            x = self.ids[samples.image]
            x = vocabulary(x) if vocabulary is not None else x
        else:
            x = self.codes[samples.image]
        return x if samples.question is None else append_question(x, samples.question)


@dataclass
class TrainedProbe:
    task: Task
    probe: AttentionProbe
    vocabulary: CompactIds
    best_epoch: int
    val_top1: float
    train_samples: int
    val_samples: int
    history: list[dict] = field(default_factory=list)


def annotations(batch: dict) -> dict[str, torch.Tensor]:
    """What the probe tasks need from a batch: object fields, or class labels."""
    if "relations" in batch:
        meta = {key: batch[key] for key in SHAPES_META}
        meta["area"] = batch["masks"].flatten(2).sum(2)
        return meta
    if "labels" in batch:
        return {"labels": batch["labels"]}
    if "label" in batch:
        return {"labels": torch.as_tensor(batch["label"])[:, None]}
    return {}


def tokenize_messages(model: COMiT, dataset: Dataset, settings: EvalSettings, desc: str = "tokenize") -> Messages:
    """Messages and annotations of every image of ``dataset`` under the settings' policy."""
    ids, codes, metas = [], [], []
    for batch in batches(dataset, settings.batch_size, desc, settings.progress):
        tokens = tokenize_batch(model, batch["image"], batch["position"], settings).to("cpu")
        ids.append(tokens.ids)
        codes.append(tokens.messages)
        metas.append(annotations(batch))
    meta = {key: torch.cat([m[key] for m in metas]) for key in metas[0]}
    return Messages(torch.cat(ids), torch.cat(codes), meta, model.codebook_size, model.quantizer.levels)


def train_task_probe(task: Task, train: Messages, probe: ProbeSettings,
                     log: Callable[[str], None] | None = None) -> TrainedProbe:
    """Split the task's training images into train/val, train with early stopping on val top-1."""
    images = torch.unique(task.train.image)
    if len(images) < 2:
        raise ValueError(f"probe task {task.name!r} has {len(images)} training images; it needs at least 2 "
                         "(raise --num-train)")
    fit_images, val_images = split_indices(len(images), probe.val_fraction, seed=probe.seed)
    keep_fit = torch.zeros(len(train.ids), dtype=torch.bool)
    keep_fit[images[fit_images]] = True
    keep_val = torch.zeros_like(keep_fit)
    keep_val[images[val_images]] = True
    fit, val = task.train.take(keep_fit), task.train.take(keep_val)
    vocabulary = CompactIds(train.ids[torch.unique(fit.image)])
    result = train_probe(train.inputs(fit, probe.input, vocabulary), fit.label,
                         train.inputs(val, probe.input, vocabulary), val.label,
                         num_classes=len(task.classes), input=probe.input, vocab_size=vocabulary.size,
                         epochs=probe.epochs, batch_size=probe.batch_size, lr=probe.lr,
                         weight_decay=probe.weight_decay, patience=probe.patience, seed=probe.seed,
                         schedule=probe.schedule,
                         progress=False, log=None if log is None else _task_log(log, task.name), dim=probe.dim,
                         heads=probe.heads, depth=probe.depth,
                         question_vocab=task.question_vocab, question_length=task.question_length,
                         num_positions=train.ids.shape[1])
    return TrainedProbe(task, result.model, vocabulary, result.best_epoch, result.top1, len(fit), len(val),
                        [{"task": task.name, **row} for row in result.history])


def _task_log(log: Callable[[str], None], task: str) -> Callable[[str], None]:
    return lambda line: log(f"{task}: {line}")


def score_probe(trained: TrainedProbe, test: Messages, probe: ProbeSettings) -> list[dict]:
    """One row per test set of the task: top-1, top-5 and the majority-class baseline."""
    rows = []
    for name, samples in trained.task.tests.items():
        row = {"task": trained.task.name, "test": name, "primary": trained.task.primary,
               "num_classes": len(trained.task.classes), "test_samples": len(samples),
               "test_images": int(torch.unique(samples.image).numel()),
               "train_samples": trained.train_samples, "val_samples": trained.val_samples,
               "best_epoch": trained.best_epoch, "val_top1": trained.val_top1}
        if len(samples) == 0:
            rows.append({**row, "top1": None, "top5": None, "majority_top1": None, "majority_top5": None,
                         "prior_top1": None, "prior_top5": None})
            continue
        scores = evaluate_probe(trained.probe, test.inputs(samples, probe.input, trained.vocabulary), samples.label)
        rows.append({**row, **scores, **constant_guess(samples.label, len(trained.task.classes)),
                     **prior_guess(trained.task.train.label, samples.label, len(trained.task.classes))})
    return rows


def constant_guess(labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """What always answering the most frequent test labels scores: the floor of top-1 / top-5."""
    counts = torch.bincount(labels, minlength=num_classes).sort(descending=True).values
    k = min(5, num_classes)
    return {"majority_top1": float(counts[0]) / len(labels), "majority_top5": float(counts[:k].sum()) / len(labels)}


def prior_guess(train_labels: torch.Tensor, test_labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """What always answering the most frequent TRAINING labels scores on the test labels: what a probe
    that reads nothing learns to answer. Below the test majority where the test's labels are
    distributed otherwise (the compositional task's held-out pairs); ``controls_verdict`` takes the
    chance band from here (or uniform guessing) up to the test majority."""
    ranked = torch.bincount(train_labels, minlength=num_classes).argsort(descending=True, stable=True)
    k = min(5, num_classes)
    hits = test_labels[:, None] == ranked[None, :k]
    return {"prior_top1": float(hits[:, 0].float().mean()), "prior_top5": float(hits.any(1).float().mean())}


def train_probes(train: Messages, test: Messages, probe: ProbeSettings, classes: list[str] | None = None,
                 progress: bool = True, log: Callable[[str], None] | None = None
                 ) -> tuple[list[TrainedProbe], list[str]]:
    """A trained probe per task (tasks the data cannot support are refused with a clear error)."""
    names = probe.tasks or default_tasks(train.meta)
    tasks = build_tasks(names, train.meta, test.meta, classes, probe.holdout_fraction, probe.seed)
    trained, notes = [], []
    with few_threads():
        for task in progress_bar(tasks, desc="probes", unit="task", enabled=progress, leave=False):
            notes += [f"{task.name}: {note}" for note in task.notes]
            trained.append(train_task_probe(task, train, probe, log))
    return trained, notes


@contextmanager
def few_threads(count: int = 1):
    """Run a probe's many tiny CPU matmuls on one thread: they gain nothing from more, and where
    cores are shared or busy the threads spin against each other (measured 15x slower on 2 busy
    cores). The caller's setting is restored afterwards."""
    with torch_threads(min(count, torch.get_num_threads())):
        yield


def evaluate_probes(model: COMiT, train_dataset: Dataset, test_dataset: Dataset,
                    settings: EvalSettings | None = None, probe: ProbeSettings | None = None,
                    classes: list[str] | None = None) -> ProbeResult:
    """Train probes on messages of ``train_dataset`` and test them on ``test_dataset``.

    Items need ``image`` and either the shapes annotations (tasks semantic / compositional /
    relational) or ``label`` / ``labels`` (task classes). With ``probe.controls`` (shapes data) each
    task is also probed on its positive and negative control messages (``probe_controls``), rows
    marked by ``messages``; ``metrics`` hold the model's rows only.
    """
    settings, probe = settings or probe_policy(), probe or ProbeSettings()
    settings.check(model)
    train = tokenize_messages(model, train_dataset, settings, "tokenize train")
    test = tokenize_messages(model, test_dataset, settings, "tokenize test")
    sources = {MODEL_MESSAGES: (train, test)}
    if probe.controls and "center" in train.meta:
        sources.update(control_messages(train, test, probe))
    rows, history, notes = probe_sources(sources, probe, classes or dataset_classes(train_dataset), settings.progress)
    metrics = {probe_metric_key(r): r[r["primary"]] for r in rows if r["messages"] == MODEL_MESSAGES}
    return ProbeResult(metrics=metrics, rows=rows, history=history, notes=notes,
                       settings={**settings.describe(), **probe.describe(), "train_images": len(train.ids),
                                 "test_images": len(test.ids)})


def control_messages(train: Messages, test: Messages, probe: ProbeSettings) -> dict[str, tuple[Messages, Messages]]:
    """Each control's (train, test) messages, as long as the model's; the scene is written on the
    message's own grid (``probe.cells``, or the square root of the message length)."""
    cells = probe.cells or max(1, round(train.ids.shape[1] ** 0.5))
    return {kind: (train.control(kind, cells, seed=2 * probe.seed + 1),
                   test.control(kind, cells, seed=2 * probe.seed + 2)) for kind in CONTROLS}


def probe_sources(sources: dict[str, tuple[Messages, Messages]], probe: ProbeSettings, classes: list[str],
                  progress: bool) -> tuple[list[dict], list[dict], list[str]]:
    """Probe every task on each source of messages (the model's, the controls): score rows with their
    95 % intervals, the training history, and the tasks' notes (once)."""
    rows, history, notes = [], [], []
    for source, (train, test) in sources.items():
        log = _epoch_log(source) if progress else None
        trained, task_notes = train_probes(train, test, probe, classes, progress=False, log=log)
        notes = notes or task_notes
        rows += [{"messages": source, **with_interval(row)} for t in trained for row in score_probe(t, test, probe)]
        history += [{"messages": source, **h} for t in trained for h in t.history]
    notes += [f"{r['task']}/{r['test']}: no test samples" for r in rows
              if r["test_samples"] == 0 and r["messages"] == MODEL_MESSAGES]
    return rows, history, notes


def with_interval(row: dict) -> dict:
    """The row with the 95 % Wilson interval of its primary score over the test *images*: samples of
    one image are not independent draws (a relational question and its mirror ask about the same
    picture, with opposite answers), so each image counts once — a conservative interval. Counted
    over samples, the relational negative control once scored below chance "significantly" (0.225,
    0.210–0.242, against 0.249–0.251; docs/results.md, "The long run")."""
    score, count = row.get(row["primary"]), row.get("test_images", row["test_samples"])
    if score is None or not count:
        return {**row, "ci95_low": None, "ci95_high": None}
    low, high = wilson_interval(score, count)
    return {**row, "ci95_low": low, "ci95_high": high}


def wilson_interval(rate: float, count: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``rate`` observed over ``count`` trials."""
    centre = (rate + z * z / (2 * count)) / (1 + z * z / count)
    half = z * ((rate * (1 - rate) / count + z * z / (4 * count * count)) ** 0.5) / (1 + z * z / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def _epoch_log(source: str) -> Callable[[str], None]:
    def log(line: str) -> None:
        print(f"probe ({source} messages) {line}", file=sys.stderr, flush=True)

    return log


def dataset_classes(dataset: Dataset) -> list[str]:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return list(getattr(dataset, "classes", []) or [])


def probe_datasets(data: str, image_size: int, labels: str | Path | None = None, num_train: int | None = None,
                   num_test: int | None = None, test_fraction: float = 0.2, seed: int = 0
                   ) -> tuple[Dataset, Dataset, list[str]]:
    """Probe-training and test images for ``data``.

    * shapes: its ``train`` and ``val`` splits;
    * a labels file: its ``split`` column, or a seeded random split of its rows;
    * a folder with ``train/`` and ``val/`` sub-folders of classes (ImageNet layout): those;
    * any other folder of class sub-folders: a seeded random split of its images.
    """
    if labels is not None:
        root = data if Path(data).is_dir() else None
        every = LabelsFileDataset(labels, image_size, root=root)
        if every.has_splits:
            train, test = (LabelsFileDataset(labels, image_size, root=root, split=s) for s in ("train", "test"))
            train.classes = test.classes = every.classes  # one label index space for both
            _relabel(train, every), _relabel(test, every)
        else:
            train, test = _random_split(every, test_fraction, seed)
        classes = every.classes
    else:
        root = Path(data)
        if root.is_dir() and not ((root / "train").is_dir() and (root / "val").is_dir()):
            every = build_dataset(data, image_size, split="val")
            train, test = _random_split(every, test_fraction, seed)
        else:
            train, test = build_dataset(data, image_size, split="train"), build_dataset(data, image_size, split="val")
            if isinstance(train, ImageFolderDataset) and train.classes != test.classes:
                raise ValueError(f"the class folders of {root / 'train'} and {root / 'val'} differ; "
                                 "they must name the same classes")
        classes = dataset_classes(train)
    return first_items(train, num_train), first_items(test, num_test), classes


def _relabel(part: LabelsFileDataset, every: LabelsFileDataset) -> None:
    """Re-index a split's labels into the class list of the whole file."""
    rows = {path: labels for path, labels in zip(every.paths, every.labels)}
    part.labels = torch.stack([rows[p] for p in part.paths])


def _random_split(dataset: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    train, test = split_indices(len(dataset), test_fraction, seed=seed)
    return Subset(dataset, sorted(train.tolist())), Subset(dataset, sorted(test.tolist()))


PROBE_COLUMNS = ["messages", "task", "test", "primary", "top1", "top5", "ci95_low", "ci95_high", "prior_top1",
                 "prior_top5", "majority_top1", "majority_top5", "num_classes", "train_samples", "val_samples",
                 "test_samples", "test_images", "best_epoch"]


def controls_verdict(rows: list[dict]) -> list[dict]:
    """Per task and test set: the model's score beside its controls', against the chance band of a
    probe that reads nothing: from the lower of guessing uniformly and guessing the training prior
    (``prior_guess``) up to the best blind guess, the test's own majority. The positive control must
    be far above it (at least halfway from its top to 1), else the probe cannot read this task and
    the model's score says nothing; the negative control's 95 % interval must meet the band."""
    table = {}
    for row in rows:
        primary = row["primary"]
        if row.get(primary) is None:
            continue
        k = 1 if primary == "top1" else min(5, row["num_classes"])
        low = min(row[f"prior_{primary}"], k / row["num_classes"])
        entry = table.setdefault((row["task"], row["test"]), {
            "task": row["task"], "test": row["test"], "primary": primary, "chance_low": low,
            "chance_high": row[f"majority_{primary}"]})
        entry[row["messages"]] = row[primary]
        entry[f"{row['messages']}_ci95"] = [row["ci95_low"], row["ci95_high"]]
    for entry in table.values():
        top = entry["chance_high"]
        scene, noise = entry.get("scene"), entry.get("random_ci95")
        entry["probe_reads"] = None if scene is None else scene >= top + 0.5 * (1 - top)
        entry["random_at_chance"] = None if noise is None else noise[0] <= top and noise[1] >= entry["chance_low"]
    return list(table.values())


CONTROL_COLUMNS = ["task", "test", "primary", "chance", MODEL_MESSAGES, "scene", "random", "probe_reads",
                   "random_at_chance"]


def control_rows(verdicts: list[dict]) -> list[dict]:
    """``controls_verdict`` as table rows: each score with its interval, chance as a band."""
    def scored(entry: dict, key: str) -> str | None:
        if entry.get(key) is None:
            return None
        low, high = entry[f"{key}_ci95"]
        return f"{entry[key]:.3f} ({low:.3f}–{high:.3f})"

    return [{**{k: entry[k] for k in ("task", "test", "primary", "probe_reads", "random_at_chance")},
             "chance": f"{entry['chance_low']:.3f}–{entry['chance_high']:.3f}",
             **{key: scored(entry, key) for key in (MODEL_MESSAGES, "scene", "random")}} for entry in verdicts]


def write_probe_report(out: Path, results: ProbeResult) -> None:
    """results.json, results.md, probe_scores.png (top-1/top-5 per task) and probe_training.png."""
    from ..plots import plot_bars, plot_curves
    from .report import markdown_report, markdown_table, write_results

    rows = [{"messages": MODEL_MESSAGES, **r} for r in results.rows]  # results written before the controls
    sections = [("Scores", markdown_table(rows, PROBE_COLUMNS) +
                 "\n\n`messages`: the tokenizer's (`model`) or a control's — " +
                 "; ".join(f"`{k}`: {v}" for k, v in CONTROL_TEXT.items()) +
                 ". `primary` is the number the paper reports for this kind of task; `ci95_low` / `ci95_high` its "
                 "95 % Wilson interval, each test image counted once (`test_images`; its samples are not independent); `prior_top1` / `prior_top5` what always answering the "
                 "most frequent TRAINING label(s) scores (chance: what a probe that reads nothing learns); "
                 "`majority_top1` / `majority_top5` the same with the test's own most frequent labels.")]
    if any(r["messages"] != MODEL_MESSAGES for r in rows):
        sections.append(("Controls", markdown_table(control_rows(controls_verdict(rows)), CONTROL_COLUMNS) +
                         "\n\nScores with their 95 % intervals. `chance`: the band of a probe that reads nothing, "
                         "from the lower of guessing uniformly and guessing the training labels' prior up to the "
                         "best blind guess (the test's majority). `probe_reads`: the positive control scores at "
                         "least halfway from the band's top to 1 (the probe can read this task's answer when a "
                         "message holds it); `random_at_chance`: the negative control's interval meets the band. "
                         "A model score means something only where both hold."))
    scored = [r for r in rows if r["top1"] is not None]
    if scored:
        long = [{"probe": f"{r['task']}/{r['test']}", "messages": r["messages"], "accuracy": r[r["primary"]]}
                for r in scored]
        long += [{"probe": f"{r['task']}/{r['test']}", "messages": "chance", "accuracy": r[f"majority_{r['primary']}"]}
                 for r in scored if r["messages"] == MODEL_MESSAGES]
        plot_bars(long, x="probe", y="accuracy", hue="messages", path=out / "probe_scores.png",
                  title="Probes: primary score per messages (chance: the majority answer)")
        sections.append(("Plots", "![scores](probe_scores.png)\n\n![validation top-1 per epoch](probe_training.png)"))
        history = [{**h, "run": f"{h['task']} ({h.get('messages', MODEL_MESSAGES)})"} for h in results.history]
        plot_curves(history, x="epoch", y="val_top1", hue="run", path=out / "probe_training.png",
                    title="Probe training (validation top-1)")
    data = results.to_json()
    write_results(out, data, markdown_report("Probes", data, sections))
