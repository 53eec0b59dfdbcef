#!/usr/bin/env bash
# The GPU check: a short, prepared script for a machine with a GPU (under 5 minutes on one).
#   1. the GPU-relevant tests (precision, loss scaling, reload tolerance, mirrored training,
#      several workers sharing one GPU);
#   2. one variant on the full data for 2 epochs in float32 and in mixed_float16 (Keras'
#      automatic XLA, i.e. jit_compile="auto"), and a mirrored run over the visible GPUs;
#   3. a Markdown table of images/s and accuracies -> $GPU_CHECK_TABLE
#      (default benchmarks/gpu_check.md; on the device tool, $OUT/gpu_check.md).
# Without a GPU it says so, runs the fast precision tests on the CPU and skips the rest.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=... to use another interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
TABLE=${GPU_CHECK_TABLE:-${OUT:+$OUT/gpu_check.md}}
TABLE=${TABLE:-benchmarks/gpu_check.md}
WORK=$(mktemp -d)
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
started=$(date +%s)

gpus=$("$PY" -c 'import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null | tail -1)
gpus=${gpus:-0}
command -v nvidia-smi >/dev/null && nvidia-smi -L
echo "TensorFlow sees $gpus GPU(s)"

if [ "$gpus" = 0 ]; then
    echo "gpu_check: no GPU visible to TensorFlow -- skipping the GPU runs and the slow tests;"
    echo "gpu_check: running the precision tests on the CPU only"
    "$PY" -m pytest -q -p no:cacheprovider tests/test_correctness.py -k "loss_scale or gpu_tensorflow"
    status=$?
    printf '# GPU check\n\nNo GPU visible to TensorFlow on %s (%s): GPU runs skipped; CPU precision tests exit %s.\n' \
        "$(hostname)" "$(date -u +%F)" "$status" > "$TABLE"
    echo "gpu_check: wrote $TABLE"
    exit $status
fi

"$PY" -m pytest -q -p no:cacheprovider \
    tests/test_correctness.py -k "precision or loss_scale or short_run" \
    tests/test_cli.py::test_saved_model_predicts_as_before_saving \
    tests/test_scaling.py::test_two_workers_on_one_dir_end_with_a_complete_table \
    tests/test_scaling.py::test_mirrored_on_two_cpus_is_the_same_experiment_as_one_device
tests_status=$?

ONE=(--epochs 2 --activation relu --downsampling maxpool --optimizer adam --no-tta)
for config in float32 mixed_float16; do
    "$PY" fashion_mnist_cnn.py "${ONE[@]}" --precision "$config" --distribute none \
        --output-dir "$WORK/$config" | grep -v '^Epoch'
done
"$PY" fashion_mnist_cnn.py "${ONE[@]}" --precision mixed_float16 --distribute mirrored \
    --output-dir "$WORK/mirrored" | grep -v '^Epoch'

"$PY" - "$WORK" "$TABLE" "$tests_status" "$started" <<'PY'
import json, sys, time
from pathlib import Path
work, table, tests_status, started = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
lines = ["# GPU check", "",
         "`bash benchmarks/gpu_check.sh`: CNN_ReLU_MaxPool_Adam, full data (54,000 training "
         "images), 2 epochs, batch 128; images/s over both epochs (the first includes tracing "
         "and, with XLA, compilation).", "",
         "| run | device | precision | XLA | replicas | train s | images/s | val acc | test acc |",
         "|---|---|---|---|---:|---:|---:|---:|---:|"]
for name in ("float32", "mixed_float16", "mirrored"):
    paths = list((work / name).glob("runs/*/seed0/metrics.json"))
    if not paths:
        lines.append(f"| {name} | failed: no metrics.json | | | | | | | |")
        continue
    m = json.loads(paths[0].read_text())
    e = m["environment"]
    lines.append(f"| {name} | {e['device']} | {e['precision']} | {'on' if e['xla'] else 'off'} | "
                 f"{e['replicas']} | {m['train_seconds']:.0f} | "
                 f"{54000 * m['epochs_run'] / m['train_seconds']:,.0f} | "
                 f"{100 * m['val_accuracy']:.2f}% | {100 * m['test_accuracy']:.2f}% |")
lines += ["", f"GPU-relevant tests: exit {tests_status}. Whole check: {time.time() - started:.0f} s."]
Path(table).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "gpu_check: wrote $TABLE"
