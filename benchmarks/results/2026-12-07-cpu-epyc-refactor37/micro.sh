for r in 1 2 3; do
 (cd /work/exp-tree && PYTHONPATH=/work/exp-tree/src HF_HUB_OFFLINE=1 /work/main/.venv/bin/python /work/runs/bench37/micro.py old)
 (cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python /work/runs/bench37/micro.py new)
done
