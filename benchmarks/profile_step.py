"""Where one training step of the runner spends its time, from TensorFlow's own profiler.

Traces `model.fit` of the runner's pipeline (make_dataset + compiled_model, one variant,
batch 128, random images: timing does not depend on pixel values) with
`tf.profiler.experimental`, then reads the trace (the XSpace protobuf TensorBoard's profile
plugin reads) and adds up the durations of the TensorFlow ops the executor ran, grouped by
the layer they belong to (forward, and backward under gradient_tape/) and by op type.
Op durations overlap (two inter-op threads, each op itself multi-threaded), so the table
gives shares of the total op time, not of the wall time.

    python -m benchmarks.profile_step                       # CNN_ReLU_MaxPool_Adam
    python -m benchmarks.profile_step --variant leakyrelu strided sgd --steps 40
    python -m benchmarks.profile_step --precision mixed_bfloat16
"""

import argparse
import collections
import re
import tempfile
from pathlib import Path

import numpy as np

import tensorflow as tf  # noqa: E402

from fmlab.run import training  # noqa: E402
from fmlab.run.recipe import Recipe  # noqa: E402
from fmlab.run.pipeline import make_dataset  # noqa: E402
from fmlab.run.variants import Variant  # noqa: E402

LAYER_KINDS = [  # (category, pattern on the layer's name), first match wins; convolutions
    ("batch norm", r"bn"),  # and pooling are told by their op types (strided "down" convs)
    ("activation", r"act"),
    ("dropout", r"dropout"),
    ("dense + softmax", r"^dense$|^softmax$"),
]


def category(path, op_type, model_name):
    """The category of one op from its name, e.g. gradient_tape/CNN_.../bn1_1/mul."""
    parts = path.split("/")
    if parts and parts[0] == "StatefulPartitionedCall":
        parts = parts[1:]
    backward = bool(parts) and parts[0] == "gradient_tape"
    if backward:
        parts = parts[1:]
    if parts and re.sub(r"_\d+$", "", parts[0]) == model_name and len(parts) > 1:
        layer = re.sub(r"_\d+$", "", parts[1])
        if "MaxPool" in op_type:
            name = "max pooling"
        elif "Conv2D" in op_type:
            name = "convolution"
        else:
            name = next((c for c, pattern in LAYER_KINDS if re.search(pattern, layer)), "other layer ops")
        return name + (" (backward)" if backward else " (forward)")
    head = parts[0] if parts else path
    if re.match(r"(adam_w|adamw|sgd|optimizer)", head, re.I) or ("Assign" in op_type and "Variable" in op_type):
        return "optimizer update"
    if re.search(r"loss|cross|categorical", path, re.I):
        return "loss"
    return "other (metrics, casts, bookkeeping)"


def profile(variant, steps, batch_size, precision="float32"):
    training.start_run(0, precision)
    rng = np.random.default_rng(0)
    images = rng.random((batch_size * steps, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, len(images)).astype(np.int32)
    dataset = make_dataset(images, labels, batch_size, training=True, seed=0)
    model = training.compiled_model(variant, tf.distribute.get_strategy(), steps,
                                    Recipe(epochs=2, precision=precision))
    model.fit(dataset, epochs=1, verbose=0)  # trace and warm up outside the profile
    logdir = tempfile.mkdtemp(prefix="profile_step_")
    tf.profiler.experimental.start(logdir)
    model.fit(dataset, epochs=1, verbose=0)
    tf.profiler.experimental.stop()
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    by_category, by_type = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's threads run the ops
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or name.startswith("ExecutorState"):
                    continue  # scheduling regions, not ops
                path, op_type = name.rsplit(":", 1)
                milliseconds = event.duration_ps / 1e9 / steps
                by_category[category(path, op_type, model.name)] += milliseconds
                by_type[op_type] += milliseconds
    return by_category, by_type


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", nargs=3, default=["relu", "maxpool", "adam"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    args = p.parse_args()
    variant = Variant(*args.variant)
    by_category, by_type = profile(variant, args.steps, args.batch_size, args.precision)
    total = sum(by_category.values())
    print(f"{variant.name}, {args.precision}, batch {args.batch_size}, {args.steps} profiled steps: "
          f"{total:.0f} ms of op time per step\n")
    print("| where | ms per step | share |\n|---|---:|---:|")
    for name, ms in by_category.most_common():
        print(f"| {name} | {ms:.1f} | {100 * ms / total:.0f}% |")
    print("\n| op type (top 12) | ms per step | share |\n|---|---:|---:|")
    for name, ms in by_type.most_common(12):
        print(f"| {name} | {ms:.1f} | {100 * ms / total:.0f}% |")


if __name__ == "__main__":
    main()
