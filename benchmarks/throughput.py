"""Training throughput: the project's training step against a plain tutorial-style reference.

Both train the same architecture (one variant, default CNN_ReLU_MaxPool_Adam) on the same
images in the same process. The reference is how a tutorial does it: `model.fit` on
in-memory numpy arrays, batch size 64, float32, Adam 1e-3, no schedule. "project" is
the runner's own pipeline: tf.data (cache, shuffle, flip, prefetch), its batch size,
optimizer with schedule, and precision (`:xla`: jit_compile=True). Every configuration
is built and traced once; then rounds time one epoch of each in turn (the whole fit()
call: Keras dispatches steps asynchronously, so only the call's end is a sync point), so
slow and fast minutes of the shared machine hit all of them alike. This machine switches
between discrete speed states (~750 and ~1,190 images/s for the same step, seen
2026-11-29), so the best round of each configuration is printed beside the median: the
best is what the step can do, the median depends on how many rounds fell in a slow minute.
Ratios to the reference and GFLOP/s (from the model's counted FLOPs) use the best.

    python -m benchmarks.throughput                        # default comparison
    python -m benchmarks.throughput --configs reference project:128:float32 project:256:mixed_bfloat16
    python -m benchmarks.throughput --repeats 12 --steps 60
    python -m benchmarks.throughput --configs reference project:128:float32 project:128:float32:xla
"""

import argparse
import statistics
import time

import keras  # noqa: E402

from fmlab.run.data import prepare_data  # noqa: E402
from fmlab.run.pipeline import make_dataset  # noqa: E402
from fmlab.run.models import build_model  # noqa: E402
from fmlab.run.variants import Variant  # noqa: E402
from fmlab.run.recipe import Recipe  # noqa: E402
from fmlab.run.training import make_optimizer  # noqa: E402


def training_flops_per_image(model):
    """Forward multiply-adds of conv and dense layers x 2 (FLOPs) x 3 (forward + 2 backward)."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            k_h, k_w = layer.kernel_size
            flops += 2 * h * w * c_out * k_h * k_w * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return 3 * flops


def prepare(config, variant, x, y, steps):
    """A function that trains one epoch of `steps` steps of this configuration (model built
    and traced once, so rounds of all configurations interleave at the epoch level)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    if config == "reference":
        keras.mixed_precision.set_dtype_policy("float32")
        batch_size = 64
        model = build_model(variant)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=False)
        data = dict(x=x[:steps * batch_size], y=y[:steps * batch_size], batch_size=batch_size)
    else:
        _, batch_size, precision, *options = config.split(":")
        batch_size = int(batch_size)
        keras.mixed_precision.set_dtype_policy(precision)
        optimizer = make_optimizer(variant, steps, Recipe(epochs=1000))
        model = build_model(variant)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile="xla" in options)  # "auto": no XLA on a CPU
        data = dict(x=make_dataset(x[:steps * batch_size], y[:steps * batch_size], batch_size,
                                   training=True, seed=0))
    model.fit(**data, epochs=1, verbose=0)  # tracing, cache filling
    keras.mixed_precision.set_dtype_policy("float32")
    images = steps * batch_size

    def one_epoch():
        started = time.perf_counter()
        model.fit(**data, epochs=1, verbose=0)
        return images / (time.perf_counter() - started)

    return one_epoch, training_flops_per_image(model)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+",
                   default=["reference", "project:128:float32"],
                   help="'reference' or project:BATCH:PRECISION[:xla]")
    p.add_argument("--variant", default="relu,maxpool,adam", help="activation,downsampling,optimizer")
    p.add_argument("--steps", type=int, default=40, help="steps per timed epoch")
    p.add_argument("--repeats", type=int, default=8,
                   help="interleaved rounds: one timed epoch of every config per round")
    p.add_argument("--peak-gflops", type=float, default=190.0,
                   help="the CPU's float32 peak, for the utilisation column (2 cores here: ~190)")
    args = p.parse_args()
    variant = Variant(*args.variant.split(","))
    data = prepare_data(None, None, 0.1, seed=0)
    x, y = data["train"]
    prepared = {c: prepare(c, variant, x, y, args.steps) for c in args.configs}
    images_per_s = {c: [] for c in args.configs}
    flops = prepared[args.configs[0]][1]
    for round_ in range(args.repeats):
        for config, (one_epoch, _) in prepared.items():
            ips = one_epoch()
            images_per_s[config].append(ips)
            print(f"round {round_ + 1}: {config:28} {ips:7.0f} images/s", flush=True)
    reference = max(images_per_s[args.configs[0]])
    print(f"\n{variant} training FLOPs per image: {flops / 1e6:.0f} M "
          f"(conv + dense, forward and backward)")
    print(f"{'config':28} {'best':>6} {'median':>7} {'ratio':>6} {'GFLOP/s':>8} {'% of peak':>9} "
          f"{'epoch (54k)':>11}")
    for config, values in images_per_s.items():
        best = max(values)
        print(f"{config:28} {best:6.0f} {statistics.median(values):7.0f} {best / reference:6.2f} "
              f"{best * flops / 1e9:8.1f} {100 * best * flops / 1e9 / args.peak_gflops:8.0f}% "
              f"{54000 / best:10.0f}s")
    print(f"(images/s: best and median of {args.repeats} interleaved rounds; ratio and the rest "
          f"from the best, against {args.configs[0]})")


if __name__ == "__main__":
    main()
