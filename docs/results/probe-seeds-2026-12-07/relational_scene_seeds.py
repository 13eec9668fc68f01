"""The relational probe on the true scene written as tokens (the positive control), by probe seed:
does it read? No model is involved. Usage (from the repository root, one thread, ~1-3 min a seed):
    .venv/bin/python docs/results/probe-seeds-2026-12-07/relational_scene_seeds.py '{"epochs": 60, "patience": 10}' 0,1,2
The JSON holds ProbeSettings overrides ({} for the defaults: 60 and 10 since 2026-12-07, 30 and 5 before); one JSON line per seed is printed."""
import json, sys, time
import torch
from comit.eval.run_probe import (Messages, ProbeSettings, annotations, probe_datasets, score_probe,
                                  train_task_probe)
from comit.eval.protocol import batches, first_items
from comit.metrics.probe_tasks import build_tasks

torch.set_num_threads(1)
train_ds, test_ds, classes = probe_datasets("shapes", 64)
train_ds, test_ds = first_items(train_ds, 2000), first_items(test_ds, 1000)

def meta_of(ds):
    metas = [annotations(b) for b in batches(ds, 100, "meta", False)]
    return {k: torch.cat([m[k] for m in metas]) for k in metas[0]}

def base(meta):
    n = len(meta["valid"])
    return Messages(torch.zeros(n, 64, dtype=torch.long), torch.zeros(n, 64, 6), meta, 64000, (8, 8, 8, 5, 5, 5))

tr, te = base(meta_of(train_ds)), base(meta_of(test_ds))
variant = json.loads(sys.argv[1])
for seed in map(int, sys.argv[2].split(",")):
    probe = ProbeSettings(tasks=("relational",), seed=seed, **variant)
    s_tr, s_te = tr.control("scene", 8, 2 * seed + 1), te.control("scene", 8, 2 * seed + 2)
    task = build_tasks(("relational",), s_tr.meta, s_te.meta, classes, probe.holdout_fraction, seed)[0]
    t0 = time.time()
    trained = train_task_probe(task, s_tr, probe)
    row = score_probe(trained, s_te, probe)[0]
    curve = [round(h["val_top1"], 2) for h in trained.history]
    print(json.dumps({"variant": variant, "seed": seed, "top1": round(row["top1"], 3), "best_epoch": trained.best_epoch,
                      "seconds": round(time.time() - t0), "val": curve}), flush=True)
