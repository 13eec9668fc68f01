#!/usr/bin/env bash
# Everything the project owes a GPU, in one call on a lent machine (the device tool: ~15 minutes a
# task, 10 minutes a call), into one folder to send back:
#   scripts/gpu_run.sh [OUT] [BUDGET_S]               (defaults: gpu-run, 540: one 9-minute call)
# Environment: DEVICE (cuda), SIZE (B), TINY=1 for the dry run on a CPU (tiny sizes everywhere, each
# step's cap x4 unless CAP_SCALE says otherwise; tests/test_gpu_run.py runs it). Steps, in order, each with its own time cap, logging to
# OUT/<step>.log and writing under OUT/<step>/; a failed step is recorded and the next one runs:
#   env         the machine: nvidia-smi, torch and CUDA versions
#   smoke       scripts/gpu_smoke.sh: every GPU code path once at tiny size (about a minute)
#   bench-fp32  comit bench --size SIZE: tokenize and detokenize at batch 1 and 64 against the released
#   bench-bf16  call pattern, the training step (random teachers), dataset tokenize images/s
#   structure   comit experiment structure --config structure-gpu, every unit from a fresh model, for
#               the time left (stopped cleanly by its cap; the same command resumes it)
# OUT/summary.md and OUT/summary.tsv list each step with its status and seconds; the numbers are in
# each step's bench.md / results.md. Put them in benchmarks/README.md and docs/results.md.
# On a lent GPU (no .venv there, and its image lacks a few packages): scripts/gpu_wheels.sh here
# first, then the device call its header shows.
set -uo pipefail
OUT=${1:-gpu-run}
BUDGET=${2:-540}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-B}
TINY=${TINY:-0}
CAP_SCALE=${CAP_SCALE:-$([ "$TINY" = 1 ] && echo 4 || echo 1)}  # a busy CPU's dry run needs longer caps
BIN=${BIN:-$(dirname "$0")/../.venv/bin}
# COMIT and PYTHON may be given (on a lent GPU without this .venv: COMIT='python3 -m comit' PYTHON=python3).
if [ -z "${COMIT:-}" ]; then COMIT="$BIN/comit"; [ -x "$COMIT" ] || COMIT=comit; fi
if [ -z "${PYTHON:-}" ]; then PYTHON="$BIN/python"; [ -x "$PYTHON" ] || PYTHON=python3; fi
export COMIT PYTHON
read -r -a COMIT_CMD <<< "$COMIT"
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False COMIT_PROGRESS_SECONDS=${COMIT_PROGRESS_SECONDS:-10}
START=$(date +%s)
mkdir -p "$OUT"
printf 'step\tstatus\tseconds\n' > "$OUT/summary.tsv"

left() { echo $((BUDGET - ($(date +%s) - START))); }

step() {  # NAME CAP_S COMMAND...: run a step with at most CAP_S seconds (and never past the budget)
    local name=$1 cap=$2 began status
    shift 2
    local remaining
    remaining=$(left)
    if [ "$remaining" -le 5 ]; then
        printf '%s\tskipped (no time left)\t0\n' "$name" >> "$OUT/summary.tsv"
        return
    fi
    cap=$((cap * CAP_SCALE))
    [ "$cap" -gt "$remaining" ] && cap=$remaining
    began=$(date +%s)
    timeout --signal=INT --kill-after=20 "$cap" "$@" > "$OUT/$name.log" 2>&1
    status=$?
    case $status in
        0) status=ok ;;
        124|130) status="stopped at its ${cap} s cap" ;;
        *) status="failed ($status)" ;;
    esac
    printf '%s\t%s\t%s\n' "$name" "$status" $(($(date +%s) - began)) >> "$OUT/summary.tsv"
    echo "$name: $status"
}

if [ "$TINY" = 1 ]; then  # the dry run: the same steps at sizes a CPU does in about a minute
    SIZE=tiny
    BENCH=(--repeats 1 --batch 2 --sections tokenize,detokenize,train,dataset --train-configs tiny)
    BENCH_BIG=()
    STRUCTURE=(--seeds 0 train.model.hidden_size=32 train.model.depth=3 train.model.num_heads=2
               train.step.projector_hidden=32 train.optim.batch_size=4 train.optim.warmup_steps=1
               train.optim.decay_steps=1 train.loop.max_steps=2 train.step.global_warmup_steps=1 train.loop.eval_every=2 train.loop.eval_images=4
               train.loop.checkpoint_every=2 eval.num_images=4 eval.num_train=16 eval.num_test=8 eval.batch_size=4
               eval.steps=1 eval.fid_features=none eval.probe_epochs=1 eval.curves.num_images=2
               "eval.curves.crop_counts=[1,2]" eval.curves.steps=1 eval.gate=null)
else
    BENCH=(--repeats 3 --batch 1 --sections peak,forward,tokenize,detokenize,train,dataset
           --train-configs shapes-latent,shapes-latent-gpu)
    BENCH_BIG=(--repeats 3 --batch 64 --sections tokenize,detokenize)
    STRUCTURE=()
fi
DEVICE_ARGS=(--device "$DEVICE")
[ "$TINY" = 1 ] && STRUCTURE+=("train.loop.device=$DEVICE")

step env 30 bash -c "nvidia-smi || true; '$PYTHON' -c 'import torch, comit; print(\"torch\", torch.__version__,
    \"cuda\", torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available()
    else \"no GPU\"); print(\"comit\", comit.__version__)'"
step smoke 150 bash "$SCRIPTS/gpu_smoke.sh" "$DEVICE" "$OUT/smoke"
for precision in fp32 bf16; do
    step "bench-$precision" 150 "${COMIT_CMD[@]}" bench --size "$SIZE" "${DEVICE_ARGS[@]}" --precision "$precision" \
        "${BENCH[@]}" --out "$OUT/bench-$precision"
    if [ ${#BENCH_BIG[@]} -gt 0 ]; then
        step "bench-$precision-batch64" 60 "${COMIT_CMD[@]}" bench --size "$SIZE" "${DEVICE_ARGS[@]}" --precision "$precision" \
            "${BENCH_BIG[@]}" --out "$OUT/bench-$precision-batch64"
    fi
done
step structure "$(left)" "${COMIT_CMD[@]}" experiment structure --config structure-gpu --out "$OUT/structure" \
    "${DEVICE_ARGS[@]}" --quiet "${STRUCTURE[@]}"

{
    echo "# GPU run: $(date -u +%Y-%m-%dT%H:%M:%SZ), device $DEVICE, size $SIZE, budget $BUDGET s"
    echo
    echo "| step | status | seconds |"
    echo "|---|---|---|"
    tail -n +2 "$OUT/summary.tsv" | while IFS=$'\t' read -r name status seconds; do
        echo "| $name | $status | $seconds |"
    done
    echo
    echo "Each step's log: \`<step>.log\`; numbers: \`bench-*/bench.md\`, \`structure/results.md\`."
} > "$OUT/summary.md"
echo "gpu run done in $(($(date +%s) - START)) s: $OUT/summary.md"
