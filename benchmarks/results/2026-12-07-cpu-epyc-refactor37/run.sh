#!/usr/bin/env bash
# #37's refactor against the code before it (34ded11 = 89d5667's model and training code), same machine,
# interleaved old/new, the structure run paused meanwhile.
cd /work/runs/bench37
for round in 1 2; do
  (cd /work/exp-tree && PYTHONPATH=/work/exp-tree/src HF_HUB_OFFLINE=1 timeout 400 /work/main/.venv/bin/python -m comit bench --size tiny --out /work/runs/bench37/old-$round --no-train-baseline --repeats 5 > /work/runs/bench37/old-$round.log 2>&1)
  (cd /work/main && HF_HUB_OFFLINE=1 timeout 400 .venv/bin/python -m comit bench --size tiny --out /work/runs/bench37/new-$round --no-train-baseline --repeats 5 > /work/runs/bench37/new-$round.log 2>&1)
done
